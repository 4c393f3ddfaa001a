/** Modules: objects that own named parameters and buffers and compute a forward pass. */

import type { Tensor } from "../tensor/tensor.ts";

/** A layer or a network. Subclasses register parameters, buffers and child modules by name. */
export abstract class Module {
  private readonly ownParameters = new Map<string, Tensor>();
  private readonly ownBuffers = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();
  /** Training mode (batch statistics) or evaluation mode (running statistics). */
  training = true;

  /** The forward pass. */
  abstract forward(x: Tensor): Tensor;

  /** Registers a trainable tensor (it gets `requiresGrad`). */
  protected addParameter(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    this.ownParameters.set(name, t);
    return t;
  }

  /** Registers a saved but not trained tensor, such as running statistics. */
  protected addBuffer(name: string, t: Tensor): Tensor {
    this.ownBuffers.set(name, t);
    return t;
  }

  /** Registers a child module. */
  protected addModule<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** Parameters of this module and its children, by dotted name ("encoder.0.weight"). */
  namedParameters(prefix = ""): Map<string, Tensor> {
    const all = new Map<string, Tensor>();
    for (const [name, t] of this.ownParameters) all.set(prefix + name, t);
    for (const [name, child] of this.children) {
      for (const [n, t] of child.namedParameters(`${prefix}${name}.`)) all.set(n, t);
    }
    return all;
  }

  /** Parameters and buffers, by dotted name: everything a checkpoint stores. */
  stateDict(prefix = ""): Map<string, Tensor> {
    const all = new Map<string, Tensor>();
    for (const [name, t] of this.ownParameters) all.set(prefix + name, t);
    for (const [name, t] of this.ownBuffers) all.set(prefix + name, t);
    for (const [name, child] of this.children) {
      for (const [n, t] of child.stateDict(`${prefix}${name}.`)) all.set(n, t);
    }
    return all;
  }

  /** The trainable tensors. */
  parameters(): Tensor[] {
    return [...this.namedParameters().values()];
  }

  /** Number of trainable scalars. */
  parameterCount(): number {
    return this.parameters().reduce((n, t) => n + t.size, 0);
  }

  /** Sets training or evaluation mode on this module and its children. */
  train(on = true): this {
    this.training = on;
    for (const child of this.children.values()) child.train(on);
    return this;
  }

  /** Evaluation mode. */
  eval(): this {
    return this.train(false);
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const t of this.stateDict().values()) t.dispose();
  }
}
