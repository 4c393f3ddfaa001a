"""The PyTorch peer of `deno task bench`: the same SSIM-autoencoder training step on the CPU.

Prints one JSON line: {"torch": version, "threads": n, "step_ms": median milliseconds}.
Run with OPENBLAS_NUM_THREADS=1 as the benchmark does; torch uses its own thread pool.
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def autoencoder(channels=1, latent=100):
    plan = [(32, 4, 2), (32, 4, 2), (32, 3, 1), (64, 4, 2), (64, 3, 1), (128, 4, 2), (64, 3, 1), (32, 3, 1)]
    act = lambda: nn.LeakyReLU(0.2)
    enc, c = [], channels
    for out, k, s in plan:
        enc += [nn.Conv2d(c, out, k, s, padding=1 if k == 3 else 1), act()]
        c = out
    enc += [nn.Conv2d(c, latent, 8), act()]
    dec = [nn.ConvTranspose2d(latent, c, 8), act()]
    for i in range(len(plan) - 1, -1, -1):
        _, k, s = plan[i]
        out = channels if i == 0 else plan[i - 1][0]
        dec.append(nn.ConvTranspose2d(c, out, k, s, padding=1))
        if i > 0:
            dec.append(act())
        c = out
    return nn.Sequential(*enc, *dec)


def gaussian_window(size=11, sigma=1.5):
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a, b, window):
    pad = window.shape[-1] // 2
    blur = lambda t: F.conv2d(t, window, padding=pad)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()


def main():
    torch.manual_seed(0)
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    model = autoencoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    window = gaussian_window()
    x = torch.rand(batch, 1, 128, 128)
    times = []
    for i in range(12):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = 1 - ssim(model(x), x, window)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "step_ms": times[len(times) // 2]}))


if __name__ == "__main__":
    main()
