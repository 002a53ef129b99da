/**
 * The only place that knows errno numbers: FsError codes become negative errno values for
 * FUSE here. An error that is not an FsError, or whose code is internal (CORRUPT, ASSERT, …),
 * is logged with its context and becomes EIO, so a bug never reaches the caller as a
 * misleading success or a wrong errno.
 */
import { constants } from 'node:os';
import { isFsError, type ErrorCode } from '../errors.js';

const errno = constants.errno;

const posixErrno: Partial<Record<ErrorCode, number>> = {
  ENOENT: errno.ENOENT,
  EEXIST: errno.EEXIST,
  ENOTDIR: errno.ENOTDIR,
  EISDIR: errno.EISDIR,
  ENOTEMPTY: errno.ENOTEMPTY,
  ENAMETOOLONG: errno.ENAMETOOLONG,
  EINVAL: errno.EINVAL,
  ENOSPC: errno.ENOSPC,
  EIO: errno.EIO,
  EPERM: errno.EPERM,
  EACCES: errno.EACCES,
  EROFS: errno.EROFS,
  EXDEV: errno.EXDEV,
  EBADF: errno.EBADF,
  EFBIG: errno.EFBIG,
  ENODATA: errno.ENODATA,
  ERANGE: errno.ERANGE,
  EMLINK: errno.EMLINK,
  ELOOP: errno.ELOOP,
  ENOTSUP: errno.ENOTSUP,
  EBUSY: errno.EBUSY,
  E2BIG: errno.E2BIG,
  LIMIT: errno.EFBIG,
};

/** Node's own error codes from fs calls (e.g. ENOSPC from a full disk) pass through unchanged. */
const nodeErrno = errno as Record<string, number>;

export type Logger = (message: string) => void;

/** The negative errno for `error`; logs `context` and the error when it becomes EIO. */
export function toErrno(error: unknown, context: string, log: Logger): number {
  if (isFsError(error)) {
    const value = posixErrno[error.code];
    if (value !== undefined) {
      if (error.code === 'EIO') log(`EIO in ${context}: ${error.message}`);
      return -value;
    }
    log(`${error.code} in ${context}: ${error.message} -> EIO`);
    return -errno.EIO;
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code in nodeErrno && code !== 'EIO') return -nodeErrno[code]!;
  log(`unexpected error in ${context} -> EIO: ${(error as Error)?.stack ?? String(error)}`);
  return -errno.EIO;
}

/** errno numbers the adapter itself answers with. */
export const errnoOf = {
  ENOENT: errno.ENOENT,
  ENODATA: errno.ENODATA,
  ERANGE: errno.ERANGE,
  EACCES: errno.EACCES,
  EROFS: errno.EROFS,
} as const;
