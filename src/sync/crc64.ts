/**
 * CRC-64/ECMA-182 (the checksum that ends every idx file).
 *
 * Parameters: polynomial 0x42F0E1EBA9EA3693, not reflected, init 0, xorout 0; the check value of
 * the ASCII bytes "123456789" is 0x6C40DF5F0B497347.
 *
 * The 64-bit register is kept as two u32 halves so the hot loop never touches BigInt, and input is
 * consumed eight bytes at a time with eight lookup tables ("slicing by 8"): table k holds the CRC
 * contribution of a byte followed by k zero bytes. Only `digest()` builds a bigint.
 */

const polyHi = 0x42f0e1eb;
const polyLo = 0xa9ea3693;
const sliceCount = 8;

/** tablesHi[k * 256 + n], tablesLo[k * 256 + n]: CRC of byte n followed by k zero bytes. */
const tablesHi = new Uint32Array(sliceCount * 256);
const tablesLo = new Uint32Array(sliceCount * 256);

function buildTables(): void {
  for (let n = 0; n < 256; n++) {
    let hi = (n << 24) >>> 0;
    let lo = 0;
    for (let bit = 0; bit < 8; bit++) {
      const top = hi & 0x80000000;
      hi = ((hi << 1) | (lo >>> 31)) >>> 0;
      lo = (lo << 1) >>> 0;
      if (top !== 0) {
        hi = (hi ^ polyHi) >>> 0;
        lo = (lo ^ polyLo) >>> 0;
      }
    }
    tablesHi[n] = hi;
    tablesLo[n] = lo;
  }
  for (let k = 1; k < sliceCount; k++) {
    for (let n = 0; n < 256; n++) {
      const prevHi = tablesHi[(k - 1) * 256 + n]!;
      const prevLo = tablesLo[(k - 1) * 256 + n]!;
      const top = prevHi >>> 24;
      tablesHi[k * 256 + n] = (((prevHi << 8) | (prevLo >>> 24)) ^ tablesHi[top]!) >>> 0;
      tablesLo[k * 256 + n] = ((prevLo << 8) ^ tablesLo[top]!) >>> 0;
    }
  }
}
buildTables();

/** An incremental CRC-64/ECMA-182; `update` any number of times, then `digest`. */
export class Crc64 {
  private hi = 0;
  private lo = 0;

  /** Feeds `bytes` into the checksum; returns this for chaining. */
  update(bytes: Uint8Array): this {
    let hi = this.hi;
    let lo = this.lo;
    let i = 0;
    const end8 = bytes.length - (bytes.length % 8);
    for (; i < end8; i += 8) {
      const xHi = (hi ^ ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!)) >>> 0;
      const xLo = (lo ^ ((bytes[i + 4]! << 24) | (bytes[i + 5]! << 16) | (bytes[i + 6]! << 8) | bytes[i + 7]!)) >>> 0;
      const a = 7 * 256 + (xHi >>> 24);
      const b = 6 * 256 + ((xHi >>> 16) & 0xff);
      const c = 5 * 256 + ((xHi >>> 8) & 0xff);
      const d = 4 * 256 + (xHi & 0xff);
      const e = 3 * 256 + (xLo >>> 24);
      const f = 2 * 256 + ((xLo >>> 16) & 0xff);
      const g = 1 * 256 + ((xLo >>> 8) & 0xff);
      const h = xLo & 0xff;
      hi = (tablesHi[a]! ^ tablesHi[b]! ^ tablesHi[c]! ^ tablesHi[d]! ^
        tablesHi[e]! ^ tablesHi[f]! ^ tablesHi[g]! ^ tablesHi[h]!) >>> 0;
      lo = (tablesLo[a]! ^ tablesLo[b]! ^ tablesLo[c]! ^ tablesLo[d]! ^
        tablesLo[e]! ^ tablesLo[f]! ^ tablesLo[g]! ^ tablesLo[h]!) >>> 0;
    }
    for (; i < bytes.length; i++) {
      const top = ((hi >>> 24) ^ bytes[i]!) & 0xff;
      hi = (((hi << 8) | (lo >>> 24)) ^ tablesHi[top]!) >>> 0;
      lo = ((lo << 8) ^ tablesLo[top]!) >>> 0;
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  /** The checksum of everything fed so far, as an unsigned 64-bit bigint. */
  digest(): bigint {
    return (BigInt(this.hi) << 32n) | BigInt(this.lo);
  }
}

/** CRC-64/ECMA-182 of `bytes`, as an unsigned 64-bit bigint. */
export function crc64(bytes: Uint8Array): bigint {
  return new Crc64().update(bytes).digest();
}

/** Reference bit-at-a-time implementation over BigInt; slow, for tests only. */
export function crc64Reference(bytes: Uint8Array): bigint {
  const poly = 0x42f0e1eba9ea3693n;
  const mask = 0xffffffffffffffffn;
  let crc = 0n;
  for (const byte of bytes) {
    crc ^= BigInt(byte) << 56n;
    for (let bit = 0; bit < 8; bit++) {
      crc = (crc & (1n << 63n)) !== 0n ? ((crc << 1n) ^ poly) & mask : (crc << 1n) & mask;
    }
  }
  return crc;
}
