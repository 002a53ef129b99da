/**
 * The one error type of zippy-fs. Every layer below src/fuse throws FsError with a stable
 * `code`; only src/fuse/errno.ts turns codes into errno numbers. Codes named after POSIX
 * errors mean exactly what that errno means to a caller; the others are internal and
 * surface as EIO at the FUSE edge (after being logged with their context).
 */

export type PosixCode =
  | 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'ENAMETOOLONG' | 'EINVAL'
  | 'ENOSPC' | 'EIO' | 'EPERM' | 'EACCES' | 'EROFS' | 'EXDEV' | 'EBADF' | 'EFBIG'
  | 'ENODATA' | 'ERANGE' | 'EMLINK' | 'ELOOP' | 'ENOTSUP' | 'EBUSY' | 'E2BIG';

export type InternalCode =
  | 'CORRUPT'        // a checksum, magic or length check failed on data we wrote
  | 'LOCKED'         // the store is held by another live process
  | 'BAD_ARCHIVE'    // an archive in the sync dir failed validation
  | 'BAD_INPUT'      // a decoder was given input it must reject (truncated, oversize, ...)
  | 'BAD_KEY'        // missing or wrong encryption key
  | 'LIMIT'          // a configured limit was exceeded
  | 'ASSERT';        // an invariant did not hold: a bug

export type ErrorCode = PosixCode | InternalCode;

const quietCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'ENAMETOOLONG', 'EPERM', 'EACCES', 'ENODATA', 'ERANGE', 'EROFS', 'EXDEV',
]);

/** An error with a stable code and the place it concerns (a path, a file, a segment). */
export class FsError extends Error {
  readonly code: ErrorCode;
  readonly place: string | undefined;

  constructor(code: ErrorCode, message: string, place?: string, options?: { cause?: unknown }) {
    // POSIX outcomes other than EIO (ENOENT of a lookup, ENODATA of getxattr, ...) are answers,
    // not faults: thousands per second reach the FUSE edge and none is logged with its stack, so
    // capturing one (the costliest part of constructing an Error) is skipped for them.
    const stackTraceLimit = Error.stackTraceLimit;
    if (quietCodes.has(code)) Error.stackTraceLimit = 0;
    try {
      super(place === undefined ? `${code}: ${message}` : `${code}: ${place}: ${message}`, options);
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    this.name = 'FsError';
    this.code = code;
    this.place = place;
  }
}

/** Factory: an FsError with a code and message, optionally naming the place. */
export function fsError(code: ErrorCode, message: string, place?: string, cause?: unknown): FsError {
  return new FsError(code, message, place, cause === undefined ? undefined : { cause });
}

/** Factory: data read back does not match what was written (checksum, magic, length). */
export function corrupt(message: string, place: string): FsError {
  return new FsError('CORRUPT', message, place);
}

/** True when `e` is an FsError with the given code. */
export function isFsError(e: unknown, code?: ErrorCode): e is FsError {
  return e instanceof FsError && (code === undefined || e.code === code);
}

/** Throws an ASSERT error when `condition` is false. Use for invariants, with a precise message. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new FsError('ASSERT', message);
}
