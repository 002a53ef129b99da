/**
 * Validation of names and paths handed to the POSIX layer. A name is one path component.
 */
import { fsError } from '../errors.js';
import { nameLengthMaxBytes, pathLengthMaxBytes } from '../limits.js';

/** The bytes of a valid file name, or ENAMETOOLONG / EINVAL. */
export function nameBytes(name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length > nameLengthMaxBytes) throw fsError('ENAMETOOLONG', `name is ${bytes.length} bytes, limit ${nameLengthMaxBytes}`, name.slice(0, 64));
  if (bytes.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw fsError('EINVAL', 'invalid file name', name.slice(0, 64));
  }
  return bytes;
}

/** Splits an absolute path into components ("/" gives []). */
export function splitPath(path: string): string[] {
  if (Buffer.byteLength(path) > pathLengthMaxBytes) throw fsError('ENAMETOOLONG', `path longer than ${pathLengthMaxBytes} bytes`, path.slice(0, 64));
  if (!path.startsWith('/')) throw fsError('EINVAL', 'path is not absolute', path);
  return path.split('/').filter((part) => part.length > 0);
}
