"""The PyTorch peer of `deno task bench`: the engine's SSIM-autoencoder training step and forward
pass, on the CPU, written as a PyTorch user would write them.

Usage: torch_peer.py --threads N [--batch 8] [--infer-batch 8] [--steps 10]

Prints one JSON line: {"torch", "threads", "interop_threads", "batch", "step_ms",
"infer_batch", "infer_ms"} (medians in milliseconds). The benchmark runs it with
OPENBLAS_NUM_THREADS=1 (torch uses its own thread pool; Debian's OpenBLAS pool fights it) and
`--threads` set to the threads lavapipe uses, so both sides get the same cores.

The network is the one of src/methods/ae/model.ts (buildAutoencoder, inputSize 128, 1 channel,
latent 100): 4×4 stride-2 and 3×3 stride-1 convolutions with "same" padding (1 on each side for
both at these sizes), an 8×8 valid convolution to the latent code, transposed convolutions back,
biases everywhere, LeakyReLU(0.2) after every layer but the last, no BatchNorm.

SSIM is the engine's (src/tensor/ops/losses.ts and filter.ts): an 11-tap Gaussian with σ 1.5 applied
separably (along x, then y) with zero padding, each output divided by the window weight that fell
inside the image; C1 = 0.01², C2 = 0.03² (data range 1); the loss is 1 − mean(SSIM map).
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ENCODER_PLAN = [(32, 4, 2), (32, 4, 2), (32, 3, 1), (64, 4, 2), (64, 3, 1), (128, 4, 2), (64, 3, 1), (32, 3, 1)]


def autoencoder(channels=1, latent=100):
    act = lambda: nn.LeakyReLU(0.2)
    encoder, c = [], channels
    for out, k, s in ENCODER_PLAN:
        encoder += [nn.Conv2d(c, out, k, s, padding=1), act()]
        c = out
    encoder += [nn.Conv2d(c, latent, 8), act()]
    decoder = [nn.ConvTranspose2d(latent, c, 8), act()]
    for i in range(len(ENCODER_PLAN) - 1, -1, -1):
        _, k, s = ENCODER_PLAN[i]
        out = channels if i == 0 else ENCODER_PLAN[i - 1][0]
        decoder.append(nn.ConvTranspose2d(c, out, k, s, padding=1))
        if i > 0:
            decoder.append(act())
        c = out
    return nn.Sequential(nn.Sequential(*encoder), nn.Sequential(*decoder))


class SSIM(nn.Module):
    """Mean SSIM with a separable Gaussian window and border-normalised statistics."""

    def __init__(self, channels=1, size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0):
        super().__init__()
        x = torch.arange(size, dtype=torch.float32) - size // 2
        g = torch.exp(-(x**2) / (2 * sigma**2))
        g = g / g.sum()
        self.channels = channels
        self.pad = size // 2
        self.register_buffer("gx", g.view(1, 1, 1, size).repeat(channels, 1, 1, 1))
        self.register_buffer("gy", g.view(1, 1, size, 1).repeat(channels, 1, 1, 1))
        self.c1 = (k1 * data_range) ** 2
        self.c2 = (k2 * data_range) ** 2
        self.norm = None  # 1 / (window weight inside the image), per image size

    def blur(self, t):
        t = F.conv2d(t, self.gx, padding=(0, self.pad), groups=self.channels)
        return F.conv2d(t, self.gy, padding=(self.pad, 0), groups=self.channels)

    def forward(self, a, b):
        if self.norm is None or self.norm.shape[-2:] != a.shape[-2:]:
            with torch.no_grad():
                ones = torch.ones(1, self.channels, *a.shape[-2:])
                self.norm = 1 / self.blur(ones)
        blur = lambda t: self.blur(t) * self.norm
        mu_a, mu_b = blur(a), blur(b)
        mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
        var_a = blur(a * a) - mu_a2
        var_b = blur(b * b) - mu_b2
        cov = blur(a * b) - mu_ab
        num = (2 * mu_ab + self.c1) * (2 * cov + self.c2)
        den = (mu_a2 + mu_b2 + self.c1) * (var_a + var_b + self.c2)
        return (num / den).mean()


def median_ms(fn, runs, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--infer-batch", type=int, default=8, help="inference batch")
    parser.add_argument("--steps", type=int, default=10, help="timed runs (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = autoencoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    ssim = SSIM()
    x = torch.rand(args.batch, 1, 128, 128)

    def step():
        optimizer.zero_grad()
        loss = 1 - ssim(model(x), x)
        loss.backward()
        optimizer.step()

    model.train()
    step_ms = median_ms(step, args.steps)

    model.eval()
    images = torch.rand(args.infer_batch, 1, 128, 128)

    def infer():
        with torch.no_grad():
            model(images)

    infer_ms = median_ms(infer, max(args.steps, 10))
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "batch": args.batch,
        "step_ms": step_ms,
        "infer_batch": args.infer_batch,
        "infer_ms": infer_ms,
    }))


if __name__ == "__main__":
    main()
