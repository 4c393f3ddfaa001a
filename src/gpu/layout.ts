/**
 * Declarations shared by TypeScript and WGSL, written once in TypeScript: uniform structs and
 * tables of named constants (op codes, modes). Each one knows its WGSL text, which the pipeline
 * cache compiles together with the shaders declared with it (see `declareShader`), so a .wgsl
 * file uses `GemmParams` or `OP_RELU` without defining them, and the TypeScript side can never
 * disagree with it about a field's offset or an op's number.
 */

/** Scalar field types. */
export type ScalarType = "u32" | "i32" | "f32";

/** A fixed array of vec4s, written as in WGSL, for example `array<vec4u, 2>` for 8 dimensions. */
export type Vec4ArrayType = `array<vec4${"u" | "i" | "f"}, ${number}>`;

/** The WGSL types a uniform field may have. */
export type FieldType = ScalarType | Vec4ArrayType;

/** Fields of a uniform struct, in order: name → type. */
export type StructFields = Readonly<Record<string, FieldType>>;

/** The value a field takes: a number, or for an array up to 4 × length numbers (zero-filled). */
export type FieldValue<T extends FieldType> = T extends ScalarType ? number : ArrayLike<number>;

/** Field values by name. Fields named `_…` are padding: zero-filled and never given. */
export type StructValues<F extends StructFields> = {
  readonly [K in keyof F as K extends `_${string}` ? never : K]: FieldValue<F[K]>;
};

/** WGSL text that a shader is compiled with, next to its own source. */
export interface WgslDeclaration {
  /** The declaration's WGSL text, ending with a newline. */
  readonly wgsl: string;
}

/** Where one field lies in the struct. */
export interface FieldLayout {
  /** Field name, as in WGSL. */
  readonly name: string;
  /** Element kind: the scalar itself, or the vec4's component type for arrays. */
  readonly scalar: ScalarType;
  /** Number of scalars: 1, or 4 × the array length. */
  readonly count: number;
  /** Byte offset in the struct (WGSL's alignment rules). */
  readonly offset: number;
  /** Whether the field is padding (name starting with `_`). */
  readonly padding: boolean;
}

const vec4ArrayPattern = /^array<vec4([uif]), (\d+)>$/;
const scalarOfSuffix = { u: "u32", i: "i32", f: "f32" } as const;

/** A uniform struct: its WGSL declaration, its layout, and packing of values given by name. */
export class UniformStruct<F extends StructFields> implements WgslDeclaration {
  /** `struct Name { … }` as WGSL. */
  readonly wgsl: string;
  /** Fields in declaration order with their offsets. */
  readonly layout: readonly FieldLayout[];
  /** The struct's size in bytes by WGSL's rules (a multiple of its alignment). */
  readonly size: number;
  private readonly byName = new Map<string, FieldLayout>();

  /** Declares struct `name` with `fields` in the order given. */
  constructor(readonly name: string, fields: F) {
    const layout: FieldLayout[] = [];
    let offset = 0;
    let alignment = 4;
    for (const [field, type] of Object.entries(fields)) {
      let scalar: ScalarType;
      let count = 1;
      let fieldAlignment = 4;
      if (type === "u32" || type === "i32" || type === "f32") scalar = type;
      else {
        const match = vec4ArrayPattern.exec(type);
        if (!match || Number(match[2]) < 1) {
          throw new Error(
            `Field ${name}.${field} has type "${type}"; uniform fields are u32, i32, f32 or ` +
              `array<vec4u|vec4i|vec4f, N>`,
          );
        }
        scalar = scalarOfSuffix[match[1] as keyof typeof scalarOfSuffix];
        count = 4 * Number(match[2]);
        fieldAlignment = 16;
      }
      offset = roundUp(offset, fieldAlignment);
      alignment = Math.max(alignment, fieldAlignment);
      const entry = { name: field, scalar, count, offset, padding: field.startsWith("_") };
      layout.push(entry);
      this.byName.set(field, entry);
      offset += 4 * count;
    }
    if (layout.length === 0) throw new Error(`Struct ${name} has no fields`);
    this.layout = layout;
    this.size = roundUp(offset, alignment);
    const lines = Object.entries(fields).map(([field, type]) => `  ${field}: ${type},\n`);
    this.wgsl = `struct ${name} {\n${lines.join("")}}\n`;
  }

  /** Byte offset of a field. */
  offsetOf(field: keyof F & string): number {
    const entry = this.byName.get(field);
    if (!entry) throw new Error(`Struct ${this.name} has no field "${field}"`);
    return entry.offset;
  }

  /**
   * The uniform bytes for these values, padded to 16 bytes. Throws, naming the struct and the
   * field, when a field is missing, unknown, or given a value of the wrong kind.
   */
  pack(values: StructValues<F>): ArrayBuffer {
    const given = values as Readonly<Record<string, number | ArrayLike<number> | undefined>>;
    for (const field in given) {
      const entry = this.byName.get(field);
      if (!entry || entry.padding) {
        const expected = this.layout.filter((f) => !f.padding).map((f) => f.name);
        throw new Error(
          `Struct ${this.name} has no field "${field}" (its fields: ${expected.join(", ")})`,
        );
      }
    }
    const view = new DataView(new ArrayBuffer(roundUp(this.size, 16)));
    for (const field of this.layout) {
      if (field.padding) continue;
      const value = given[field.name];
      if (value === undefined) {
        throw new Error(`Struct ${this.name}: field "${field.name}" is missing`);
      }
      if (field.count === 1) {
        if (typeof value !== "number") throw this.kindError(field, value);
        write(view, field.offset, field.scalar, value, () => this.kindError(field, value));
        continue;
      }
      if (typeof value === "number" || typeof value.length !== "number") {
        throw this.kindError(field, value);
      }
      if (value.length > field.count) {
        throw new Error(
          `Struct ${this.name}: field "${field.name}" holds at most ${field.count} values, ` +
            `got ${value.length}`,
        );
      }
      for (let i = 0; i < value.length; i++) {
        const element = value[i];
        write(
          view,
          field.offset + 4 * i,
          field.scalar,
          element,
          () => this.kindError(field, value),
        );
      }
    }
    return view.buffer;
  }

  private kindError(field: FieldLayout, value: unknown): Error {
    const expected = field.count === 1
      ? scalarKinds[field.scalar]
      : `an array of up to ${field.count} values, each ${scalarKinds[field.scalar]}`;
    const got = typeof value === "object" && value !== null && "length" in value
      ? `[${Array.from(value as ArrayLike<unknown>).join(", ")}]`
      : String(value);
    return new Error(`Struct ${this.name}: field "${field.name}" takes ${expected}, got ${got}`);
  }
}

/** Declares a uniform struct; see {@link UniformStruct}. */
export function uniformStruct<const F extends StructFields>(
  name: string,
  fields: F,
): UniformStruct<F> {
  return new UniformStruct(name, fields);
}

const scalarKinds = {
  u32: "a u32 (an integer from 0 to 4294967295)",
  i32: "an i32 (an integer from -2147483648 to 2147483647)",
  f32: "an f32 (a number)",
} as const;

function write(
  view: DataView,
  offset: number,
  scalar: ScalarType,
  value: unknown,
  kindError: () => Error,
): void {
  if (typeof value !== "number") throw kindError();
  if (scalar === "f32") {
    view.setFloat32(offset, value, true);
  } else if (scalar === "u32") {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw kindError();
    view.setUint32(offset, value, true);
  } else {
    if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) throw kindError();
    view.setInt32(offset, value, true);
  }
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/** `leakyRelu` → `LEAKY_RELU`. */
function snakeCase(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * A WGSL module-scope constant: booleans become `bool`, non-negative integers `u32`, other
 * numbers `f32`.
 */
export function wgslConstant(name: string, value: number | boolean): string {
  if (typeof value === "boolean") return `const ${name}: bool = ${value};\n`;
  if (Number.isInteger(value) && value >= 0) return `const ${name}: u32 = ${value}u;\n`;
  if (!Number.isFinite(value)) throw new Error(`Constant ${name} = ${value} is not finite`);
  return `const ${name}: f32 = ${value};\n`;
}

/**
 * A table of named constants as WGSL: every entry becomes `const PREFIX_NAME: u32 = value;`
 * (camelCase names in SNAKE_CASE). Op codes are declared this way, so that the numbers the
 * TypeScript side passes as `OP` are the ones the shader's `switch` compares with.
 */
export function wgslConstants(
  table: Readonly<Record<string, number | boolean>>,
  prefix = "",
): WgslDeclaration {
  const wgsl = Object.entries(table)
    .map(([name, value]) => wgslConstant(prefix + snakeCase(name), value))
    .join("");
  return { wgsl };
}
