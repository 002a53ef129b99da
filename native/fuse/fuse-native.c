/*
 * fuse-native.c: zippy-fs's patched copy of the fuse-native 2.2.6 N-API binding to the
 * high-level libfuse 2.9 API (FUSE_USE_VERSION 29). Upstream: fuse-friends/fuse-native, MIT
 * licence (see LICENSE). Every change from upstream is listed in PATCHES.md as P1..P12;
 * comments below name the patch that introduced a piece of code.
 *
 * How a request travels (P1):
 *   1. A libfuse worker thread enters one of the fn_* operations below. It fills a
 *      fuse_native_call_t on its own stack (arguments, caller context from fuse_get_context()),
 *      queues a pointer to it on the session's napi_threadsafe_function, and blocks on the
 *      call's semaphore.
 *   2. On the JS thread, js_dispatch() turns the call into JS values and invokes the handler
 *      registered for that operation as handler(call, uid, gid, pid, umask, ...args), where
 *      `call` is an external wrapping the pointer.
 *   3. The handler (src/fuse/binding.ts) eventually calls signal(call, result, ...outputs)
 *      exactly once. js_signal() copies the outputs into libfuse's structures, stores the
 *      result and posts the semaphore; from that instant the call struct may vanish.
 *   4. The worker wakes up and returns the result to libfuse, which replies to the kernel.
 *
 * Invariants:
 *   - A fuse_native_call_t is touched by the JS thread only between dispatch and signal.
 *     binding.ts guarantees that signal runs exactly once per call.
 *   - Buffers that alias libfuse memory (read and write data) are detached by js_signal
 *     (P1), so JS code that keeps them sees a zero-length buffer instead of freed memory.
 *   - The session struct lives until the session thread has torn libfuse down and the
 *     threadsafe function is finalized (P8); nothing frees it earlier.
 */

#define FUSE_USE_VERSION 29

#include <node_api.h>
#include <uv.h>

#include <fuse.h>
#include <fuse_opt.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

/* ---------------------------------------------------------------------------------------
 * Operation table. The X-macro keeps the enum, the exported name map and the libfuse
 * fuse_operations wiring in one list.
 * ------------------------------------------------------------------------------------ */

#define FUSE_NATIVE_OPS(X)                                                                  \
  X(init) X(getattr) X(fgetattr) X(access) X(statfs) X(readdir) X(opendir) X(releasedir)    \
  X(fsyncdir) X(create) X(mknod) X(open) X(release) X(flush) X(fsync) X(read) X(write)      \
  X(truncate) X(ftruncate) X(mkdir) X(rmdir) X(unlink) X(rename) X(link) X(symlink)         \
  X(readlink) X(chmod) X(chown) X(utimens) X(setxattr) X(getxattr) X(listxattr)             \
  X(removexattr)

enum {
#define X(name) OP_##name,
  FUSE_NATIVE_OPS(X)
#undef X
  OP_COUNT
};

/* Layout of the Float64Array a getattr/fgetattr handler returns (P2, P3). binding.ts has the
 * same table and checks STAT_FIELD_COUNT at load. */
enum {
  STAT_MODE, STAT_UID, STAT_GID, STAT_SIZE, STAT_NLINK, STAT_INO, STAT_RDEV, STAT_BLKSIZE,
  STAT_BLOCKS, STAT_ATIME_SEC, STAT_ATIME_NSEC, STAT_MTIME_SEC, STAT_MTIME_NSEC,
  STAT_CTIME_SEC, STAT_CTIME_NSEC, STAT_FIELD_COUNT
};

/* Layout of the Float64Array a statfs handler returns (64-bit counts, P11). */
enum {
  STATFS_BSIZE, STATFS_FRSIZE, STATFS_BLOCKS, STATFS_BFREE, STATFS_BAVAIL, STATFS_FILES,
  STATFS_FFREE, STATFS_FAVAIL, STATFS_FSID, STATFS_FLAG, STATFS_NAMEMAX, STATFS_FIELD_COUNT
};

/* Bits of the optional open/create reply flags (P11). */
enum { OPEN_DIRECT_IO = 1, OPEN_KEEP_CACHE = 2, OPEN_NONSEEKABLE = 4 };

/* Largest number of arguments js_dispatch passes: call + 4 context values + 6. */
#define DISPATCH_ARGC_MAX 11

/* ---------------------------------------------------------------------------------------
 * Data structures
 * ------------------------------------------------------------------------------------ */

/* One in-flight request; lives on the stack of the libfuse thread that serves it (P1). */
typedef struct {
  int op;

  /* Caller context from fuse_get_context() (P4). */
  uid_t uid;
  gid_t gid;
  pid_t pid;
  mode_t umask;

  /* Inputs. */
  const char *path;
  const char *path2;            /* rename/link destination, symlink link path */
  const char *name;             /* xattr name */
  struct fuse_file_info *info;
  struct fuse_conn_info *conn;
  const char *wbuf;             /* write data, setxattr value */
  size_t size;                  /* read/write length, xattr/readlink buffer size */
  off_t offset;                 /* read/write offset, truncate length */
  mode_t mode;                  /* mode, access mask */
  dev_t rdev;
  uid_t new_uid;
  gid_t new_gid;
  int flags;                    /* setxattr flags, fsync datasync */
  struct timespec times[2];

  /* Outputs. */
  struct stat *stat;
  struct statvfs *statvfs;
  char *out;                    /* read destination, getxattr value, listxattr list, readlink */
  void *dirbuf;
  fuse_fill_dir_t filler;
  int res;

  uv_sem_t done;
} fuse_native_call_t;

/* One mounted filesystem. Allocated by js_mount, freed by tsfn_finalize (P8). */
typedef struct {
  napi_threadsafe_function tsfn;
  napi_async_context async_context;
  napi_ref handlers[OP_COUNT];
  napi_ref on_exit;

  struct fuse *fuse;
  struct fuse_chan *ch;
  char *mountpoint;
  int single_threaded;

  pthread_t thread;
  int thread_done;              /* written by the session thread just before its last post */
  int loop_result;

  /* Marker queued once through the tsfn when the session has ended. */
  fuse_native_call_t exit_call;
} fuse_native_t;

/* Set in the session thread so operations that libfuse runs from fuse_destroy() (which clears
 * the context's private_data) still find their session (P8). */
static pthread_key_t session_key;

/* ---------------------------------------------------------------------------------------
 * libfuse side: runs on libfuse threads, never touches napi_env.
 * ------------------------------------------------------------------------------------ */

static fuse_native_t *current_session (void) {
  struct fuse_context *ctx = fuse_get_context();
  if (ctx != NULL && ctx->private_data != NULL) return (fuse_native_t *) ctx->private_data;
  return (fuse_native_t *) pthread_getspecific(session_key);
}

/* Hands `call` to the JS thread and waits for its result. Returns 0 or a negative errno
 * (or a byte count for read, write, getxattr and listxattr). */
static int call_js (fuse_native_call_t *call) {
  fuse_native_t *s = current_session();
  struct fuse_context *ctx = fuse_get_context();

  if (ctx != NULL) {
    call->uid = ctx->uid;
    call->gid = ctx->gid;
    call->pid = ctx->pid;
    call->umask = ctx->umask;
  }
  if (s == NULL) return -EIO;
  if (uv_sem_init(&call->done, 0) != 0) return -ENOMEM;

  call->res = -EIO;
  if (napi_call_threadsafe_function(s->tsfn, call, napi_tsfn_blocking) != napi_ok) {
    /* The environment is shutting down: nobody will ever answer. */
    uv_sem_destroy(&call->done);
    return -EIO;
  }
  uv_sem_wait(&call->done);
  uv_sem_destroy(&call->done);
  return call->res;
}

#define CALL(...) do { fuse_native_call_t c = { __VA_ARGS__ }; return call_js(&c); } while (0)

static void *fn_init (struct fuse_conn_info *conn) {
  fuse_native_t *s = current_session();
  fuse_native_call_t c = { .op = OP_init, .conn = conn };
  call_js(&c);
  /* Becomes fuse_get_context()->private_data for every later operation. */
  return s;
}

static int fn_getattr (const char *path, struct stat *st) {
  CALL(.op = OP_getattr, .path = path, .stat = st);
}

static int fn_fgetattr (const char *path, struct stat *st, struct fuse_file_info *fi) {
  CALL(.op = OP_fgetattr, .path = path, .stat = st, .info = fi);
}

static int fn_access (const char *path, int mask) {
  CALL(.op = OP_access, .path = path, .mode = (mode_t) mask);
}

static int fn_statfs (const char *path, struct statvfs *sv) {
  CALL(.op = OP_statfs, .path = path, .statvfs = sv);
}

static int fn_readdir (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
                       struct fuse_file_info *fi) {
  CALL(.op = OP_readdir, .path = path, .dirbuf = buf, .filler = filler, .offset = offset,
       .info = fi);
}

static int fn_opendir (const char *path, struct fuse_file_info *fi) {
  CALL(.op = OP_opendir, .path = path, .info = fi);
}

static int fn_releasedir (const char *path, struct fuse_file_info *fi) {
  CALL(.op = OP_releasedir, .path = path, .info = fi);
}

static int fn_fsyncdir (const char *path, int datasync, struct fuse_file_info *fi) {
  CALL(.op = OP_fsyncdir, .path = path, .flags = datasync, .info = fi);
}

static int fn_create (const char *path, mode_t mode, struct fuse_file_info *fi) {
  CALL(.op = OP_create, .path = path, .mode = mode, .info = fi);
}

static int fn_mknod (const char *path, mode_t mode, dev_t rdev) {
  CALL(.op = OP_mknod, .path = path, .mode = mode, .rdev = rdev);
}

static int fn_open (const char *path, struct fuse_file_info *fi) {
  CALL(.op = OP_open, .path = path, .info = fi);
}

static int fn_release (const char *path, struct fuse_file_info *fi) {
  CALL(.op = OP_release, .path = path, .info = fi);
}

static int fn_flush (const char *path, struct fuse_file_info *fi) {
  CALL(.op = OP_flush, .path = path, .info = fi);
}

static int fn_fsync (const char *path, int datasync, struct fuse_file_info *fi) {
  CALL(.op = OP_fsync, .path = path, .flags = datasync, .info = fi);
}

static int fn_read (const char *path, char *buf, size_t size, off_t offset,
                    struct fuse_file_info *fi) {
  CALL(.op = OP_read, .path = path, .out = buf, .size = size, .offset = offset, .info = fi);
}

static int fn_write (const char *path, const char *buf, size_t size, off_t offset,
                     struct fuse_file_info *fi) {
  CALL(.op = OP_write, .path = path, .wbuf = buf, .size = size, .offset = offset, .info = fi);
}

static int fn_truncate (const char *path, off_t size) {
  CALL(.op = OP_truncate, .path = path, .offset = size);
}

static int fn_ftruncate (const char *path, off_t size, struct fuse_file_info *fi) {
  CALL(.op = OP_ftruncate, .path = path, .offset = size, .info = fi);
}

static int fn_mkdir (const char *path, mode_t mode) {
  CALL(.op = OP_mkdir, .path = path, .mode = mode);
}

static int fn_rmdir (const char *path) {
  CALL(.op = OP_rmdir, .path = path);
}

static int fn_unlink (const char *path) {
  CALL(.op = OP_unlink, .path = path);
}

static int fn_rename (const char *from, const char *to) {
  CALL(.op = OP_rename, .path = from, .path2 = to);
}

static int fn_link (const char *from, const char *to) {
  CALL(.op = OP_link, .path = from, .path2 = to);
}

/* libfuse passes (target, linkpath). */
static int fn_symlink (const char *target, const char *linkpath) {
  CALL(.op = OP_symlink, .path = target, .path2 = linkpath);
}

static int fn_readlink (const char *path, char *buf, size_t size) {
  CALL(.op = OP_readlink, .path = path, .out = buf, .size = size);
}

static int fn_chmod (const char *path, mode_t mode) {
  CALL(.op = OP_chmod, .path = path, .mode = mode);
}

static int fn_chown (const char *path, uid_t uid, gid_t gid) {
  CALL(.op = OP_chown, .path = path, .new_uid = uid, .new_gid = gid);
}

/* With flag_utime_omit_ok set (P5) tv[i].tv_nsec may be UTIME_NOW or UTIME_OMIT. */
static int fn_utimens (const char *path, const struct timespec tv[2]) {
  CALL(.op = OP_utimens, .path = path, .times = { tv[0], tv[1] });
}

static int fn_setxattr (const char *path, const char *name, const char *value, size_t size,
                        int flags) {
  CALL(.op = OP_setxattr, .path = path, .name = name, .wbuf = value, .size = size,
       .flags = flags);
}

static int fn_getxattr (const char *path, const char *name, char *value, size_t size) {
  CALL(.op = OP_getxattr, .path = path, .name = name, .out = value, .size = size);
}

static int fn_listxattr (const char *path, char *list, size_t size) {
  CALL(.op = OP_listxattr, .path = path, .out = list, .size = size);
}

static int fn_removexattr (const char *path, const char *name) {
  CALL(.op = OP_removexattr, .path = path, .name = name);
}

/* Runs fuse_loop(_mt) and then tears libfuse down in the order fuse_teardown() uses (P8). */
static void *session_thread (void *data) {
  fuse_native_t *s = (fuse_native_t *) data;
  pthread_setspecific(session_key, s);

  s->loop_result = s->single_threaded ? fuse_loop(s->fuse) : fuse_loop_mt(s->fuse);

  /* Closes the channel fd; if the kernel mount still exists (the loop ended for another
   * reason than an unmount) libfuse detaches it lazily. Destroys the channel. */
  fuse_unmount(s->mountpoint, s->ch);
  s->ch = NULL;
  /* May still call unlink for ".fuse_hidden*" files, which goes through JS. */
  fuse_destroy(s->fuse);
  s->fuse = NULL;

  __atomic_store_n(&s->thread_done, 1, __ATOMIC_RELEASE);
  napi_call_threadsafe_function(s->tsfn, &s->exit_call, napi_tsfn_blocking);
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  return NULL;
}

/* ---------------------------------------------------------------------------------------
 * JS side: runs on the JS thread only.
 * ------------------------------------------------------------------------------------ */

#define NAPI_OK(env, call, msg)                                                             \
  do {                                                                                      \
    if ((call) != napi_ok) {                                                                \
      napi_throw_error((env), "FUSE_NATIVE", (msg));                                        \
      return NULL;                                                                          \
    }                                                                                       \
  } while (0)

static napi_value js_u32 (napi_env env, uint32_t n) {
  napi_value v; napi_create_uint32(env, n, &v); return v;
}

static napi_value js_i32 (napi_env env, int32_t n) {
  napi_value v; napi_create_int32(env, n, &v); return v;
}

static napi_value js_num (napi_env env, double n) {
  napi_value v; napi_create_double(env, n, &v); return v;
}

static napi_value js_str (napi_env env, const char *s) {
  napi_value v;
  if (s == NULL) { napi_get_null(env, &v); return v; }
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value js_fh (napi_env env, const struct fuse_file_info *fi) {
  return js_num(env, fi == NULL ? 0 : (double) fi->fh);
}

/* A Buffer aliasing libfuse memory; js_signal detaches it (P1). */
static napi_value js_alias_buffer (napi_env env, char *data, size_t size) {
  napi_value v;
  if (size == 0 || data == NULL) {
    napi_create_buffer(env, 0, NULL, &v);
    return v;
  }
  if (napi_create_external_buffer(env, size, data, NULL, NULL, &v) != napi_ok) {
    napi_get_undefined(env, &v);
  }
  return v;
}

/* uid_t/gid_t -1 ("leave unchanged") becomes JS -1 (P11). */
static napi_value js_id (napi_env env, uint32_t id) {
  return id == (uint32_t) -1 ? js_i32(env, -1) : js_u32(env, id);
}

/* Appends the operation-specific arguments of `c` to argv; returns the new argc. */
static size_t dispatch_args (napi_env env, fuse_native_call_t *c, napi_value *argv, size_t n) {
  switch (c->op) {
    case OP_init:
      argv[n++] = js_u32(env, c->conn->proto_major);
      argv[n++] = js_u32(env, c->conn->proto_minor);
      argv[n++] = js_u32(env, c->conn->max_write);
      argv[n++] = js_u32(env, c->conn->max_readahead);
      argv[n++] = js_u32(env, c->conn->capable);
      argv[n++] = js_u32(env, c->conn->want);
      break;
    case OP_getattr: case OP_statfs: case OP_rmdir: case OP_unlink: case OP_readlink:
      argv[n++] = js_str(env, c->path);
      break;
    case OP_fgetattr: case OP_readdir: case OP_releasedir: case OP_flush:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_fh(env, c->info);
      break;
    case OP_release:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_fh(env, c->info);
      argv[n++] = js_i32(env, c->info == NULL ? 0 : c->info->flags);
      break;
    case OP_access: case OP_chmod: case OP_mkdir:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_u32(env, c->mode);
      break;
    case OP_opendir: case OP_open:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_i32(env, c->info == NULL ? 0 : c->info->flags);
      break;
    case OP_fsyncdir: case OP_fsync:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_u32(env, c->flags != 0);
      argv[n++] = js_fh(env, c->info);
      break;
    case OP_create:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_u32(env, c->mode);
      argv[n++] = js_i32(env, c->info == NULL ? 0 : c->info->flags);
      break;
    case OP_mknod:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_u32(env, c->mode);
      argv[n++] = js_num(env, (double) c->rdev);
      break;
    case OP_read: case OP_write:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_fh(env, c->info);
      argv[n++] = js_alias_buffer(env, c->op == OP_read ? c->out : (char *) c->wbuf, c->size);
      argv[n++] = js_num(env, (double) c->offset);
      break;
    case OP_truncate:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_num(env, (double) c->offset);
      break;
    case OP_ftruncate:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_fh(env, c->info);
      argv[n++] = js_num(env, (double) c->offset);
      break;
    case OP_rename: case OP_link: case OP_symlink:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_str(env, c->path2);
      break;
    case OP_chown:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_id(env, c->new_uid);
      argv[n++] = js_id(env, c->new_gid);
      break;
    case OP_utimens:
      /* Seconds and nanoseconds separately, so JS can see UTIME_NOW/UTIME_OMIT (P5). */
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_num(env, (double) c->times[0].tv_sec);
      argv[n++] = js_num(env, (double) c->times[0].tv_nsec);
      argv[n++] = js_num(env, (double) c->times[1].tv_sec);
      argv[n++] = js_num(env, (double) c->times[1].tv_nsec);
      break;
    case OP_setxattr: {
      /* A copy, not an alias: handlers may keep xattr values (P6). */
      napi_value value;
      if (napi_create_buffer_copy(env, c->size, c->size ? c->wbuf : "", NULL, &value) != napi_ok) {
        napi_get_undefined(env, &value);
      }
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_str(env, c->name);
      argv[n++] = value;
      argv[n++] = js_i32(env, c->flags);
      break;
    }
    case OP_getxattr:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_str(env, c->name);
      argv[n++] = js_num(env, (double) c->size);
      break;
    case OP_listxattr:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_num(env, (double) c->size);
      break;
    case OP_removexattr:
      argv[n++] = js_str(env, c->path);
      argv[n++] = js_str(env, c->name);
      break;
  }
  return n;
}

/* Calls a JS function as a top-level callback so microtasks and nextTicks run afterwards. */
static void make_callback (napi_env env, fuse_native_t *s, napi_ref fn_ref, size_t argc,
                           napi_value *argv) {
  napi_value fn, recv;
  napi_get_reference_value(env, fn_ref, &fn);
  napi_get_global(env, &recv);   /* napi_make_callback needs an object receiver */
  napi_status st = napi_make_callback(env, s->async_context, recv, fn, argc, argv, NULL);
  if (st == napi_pending_exception) {
    /* binding.ts catches handler errors, so this is a bug in the bridge itself: surface it
     * as an uncaught exception rather than losing it. */
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

/* tsfn call_js: runs on the JS thread for every queued call and for the exit marker. */
static void js_dispatch (napi_env env, napi_value unused, void *context, void *data) {
  fuse_native_t *s = (fuse_native_t *) context;
  fuse_native_call_t *c = (fuse_native_call_t *) data;

  if (c == &s->exit_call) {
    if (env == NULL) return;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value argv[1] = { js_i32(env, s->loop_result) };
    make_callback(env, s, s->on_exit, 1, argv);
    napi_close_handle_scope(env, scope);
    return;
  }

  if (env == NULL || s->handlers[c->op] == NULL) {
    /* Environment torn down, or an op libfuse should never have called. */
    c->res = env == NULL ? -EIO : -ENOSYS;
    uv_sem_post(&c->done);
    return;
  }

  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);

  napi_value argv[DISPATCH_ARGC_MAX];
  size_t argc = 0;
  napi_create_external(env, c, NULL, NULL, &argv[argc++]);
  argv[argc++] = js_u32(env, c->uid);
  argv[argc++] = js_u32(env, c->gid);
  argv[argc++] = js_i32(env, c->pid);
  argv[argc++] = js_u32(env, c->umask);
  argc = dispatch_args(env, c, argv, argc);

  make_callback(env, s, s->handlers[c->op], argc, argv);
  napi_close_handle_scope(env, scope);
}

/* Reads a Float64Array argument of at least `count` elements; NULL if it is not one. */
static double *get_f64 (napi_env env, napi_value v, size_t count, size_t *length) {
  napi_typedarray_type type;
  size_t len;
  void *data;
  bool is_typedarray = false;
  if (napi_is_typedarray(env, v, &is_typedarray) != napi_ok || !is_typedarray) return NULL;
  if (napi_get_typedarray_info(env, v, &type, &len, &data, NULL, NULL) != napi_ok) return NULL;
  if (type != napi_float64_array || len < count) return NULL;
  if (length != NULL) *length = len;
  return (double *) data;
}

static int get_bytes (napi_env env, napi_value v, char **data, size_t *len) {
  bool ok = false;
  if (napi_is_buffer(env, v, &ok) != napi_ok || !ok) return -1;
  return napi_get_buffer_info(env, v, (void **) data, len) == napi_ok ? 0 : -1;
}

static void set_timespec (struct timespec *ts, const double *sec_nsec) {
  ts->tv_sec = (time_t) sec_nsec[0];
  ts->tv_nsec = (long) sec_nsec[1];
}

/* P2, P3: full nanoseconds and a 53-bit st_ino / st_size. */
static int fill_stat (napi_env env, napi_value v, struct stat *st) {
  const double *f = get_f64(env, v, STAT_FIELD_COUNT, NULL);
  if (f == NULL) return -EIO;
  memset(st, 0, sizeof(*st));
  st->st_mode = (mode_t) f[STAT_MODE];
  st->st_uid = (uid_t) f[STAT_UID];
  st->st_gid = (gid_t) f[STAT_GID];
  st->st_size = (off_t) f[STAT_SIZE];
  st->st_nlink = (nlink_t) f[STAT_NLINK];
  st->st_ino = (ino_t) f[STAT_INO];
  st->st_rdev = (dev_t) f[STAT_RDEV];
  st->st_blksize = (blksize_t) f[STAT_BLKSIZE];
  st->st_blocks = (blkcnt_t) f[STAT_BLOCKS];
  set_timespec(&st->st_atim, &f[STAT_ATIME_SEC]);
  set_timespec(&st->st_mtim, &f[STAT_MTIME_SEC]);
  set_timespec(&st->st_ctim, &f[STAT_CTIME_SEC]);
  return 0;
}

static int fill_statvfs (napi_env env, napi_value v, struct statvfs *sv) {
  const double *f = get_f64(env, v, STATFS_FIELD_COUNT, NULL);
  if (f == NULL) return -EIO;
  memset(sv, 0, sizeof(*sv));
  sv->f_bsize = (unsigned long) f[STATFS_BSIZE];
  sv->f_frsize = (unsigned long) f[STATFS_FRSIZE];
  sv->f_blocks = (fsblkcnt_t) f[STATFS_BLOCKS];
  sv->f_bfree = (fsblkcnt_t) f[STATFS_BFREE];
  sv->f_bavail = (fsblkcnt_t) f[STATFS_BAVAIL];
  sv->f_files = (fsfilcnt_t) f[STATFS_FILES];
  sv->f_ffree = (fsfilcnt_t) f[STATFS_FFREE];
  sv->f_favail = (fsfilcnt_t) f[STATFS_FAVAIL];
  sv->f_fsid = (unsigned long) f[STATFS_FSID];
  sv->f_flag = (unsigned long) f[STATFS_FLAG];
  sv->f_namemax = (unsigned long) f[STATFS_NAMEMAX];
  return 0;
}

/* Names arrive as one buffer of NUL-terminated names; stats, when given, as a Float64Array of
 * (ino, mode) pairs (P10: one crossing for the whole listing instead of one per name). */
static int fill_dir (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  char *names;
  size_t names_len;
  if (argc < 1 || get_bytes(env, argv[0], &names, &names_len) != 0) return -EIO;

  size_t stat_len = 0;
  const double *stats = NULL;
  if (argc >= 2) {
    napi_valuetype t;
    napi_typeof(env, argv[1], &t);
    if (t != napi_undefined && t != napi_null) {
      stats = get_f64(env, argv[1], 0, &stat_len);
      if (stats == NULL) return -EIO;
    }
  }

  size_t index = 0;
  size_t pos = 0;
  while (pos < names_len) {
    const char *name = names + pos;
    const char *end = memchr(name, '\0', names_len - pos);
    if (end == NULL) return -EIO;   /* binding.ts always terminates the last name */
    pos = (size_t) (end - names) + 1;
    if (end == name) continue;

    struct stat st;
    const struct stat *stp = NULL;
    if (stats != NULL) {
      if (2 * index + 1 >= stat_len) return -EIO;
      memset(&st, 0, sizeof(st));
      st.st_ino = (ino_t) stats[2 * index];
      st.st_mode = (mode_t) stats[2 * index + 1];
      stp = &st;
    }
    index++;
    /* With offset 0 libfuse buffers the whole listing; 1 means it ran out of memory. */
    if (c->filler(c->dirbuf, name, stp, 0) != 0) return -ENOMEM;
  }
  return 0;
}

/* getxattr/listxattr: JS hands over the whole value; the size protocol is done here (P6):
 * size 0 asks for the needed length, a too-small buffer is ERANGE, never an overrun. */
static int fill_xattr (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  char *data;
  size_t len;
  if (argc < 1 || get_bytes(env, argv[0], &data, &len) != 0) return -EIO;
  if (len > INT32_MAX) return -E2BIG;
  if (c->size == 0) return (int) len;
  if (len > c->size) return -ERANGE;
  if (len > 0) memcpy(c->out, data, len);
  return (int) len;
}

static int fill_open (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  if (c->info == NULL) return 0;
  if (argc >= 1) {
    double fh;
    if (napi_get_value_double(env, argv[0], &fh) == napi_ok) c->info->fh = (uint64_t) fh;
  }
  if (argc >= 2) {
    uint32_t bits;
    if (napi_get_value_uint32(env, argv[1], &bits) == napi_ok) {
      if (bits & OPEN_DIRECT_IO) c->info->direct_io = 1;
      if (bits & OPEN_KEEP_CACHE) c->info->keep_cache = 1;
      if (bits & OPEN_NONSEEKABLE) c->info->nonseekable = 1;
    }
  }
  return 0;
}

static int fill_readlink (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  size_t copied = 0;
  if (argc < 1 || c->size == 0) return -EIO;
  /* Truncates to size - 1 bytes and always NUL-terminates. */
  if (napi_get_value_string_utf8(env, argv[0], c->out, c->size, &copied) != napi_ok) return -EIO;
  return 0;
}

/* Interprets a successful (res >= 0) result and its outputs for operation c->op. */
static int collect_outputs (napi_env env, fuse_native_call_t *c, int res, size_t argc,
                            napi_value *argv) {
  switch (c->op) {
    case OP_read: case OP_write:
      return (size_t) res <= c->size ? res : -EIO;
    case OP_getattr: case OP_fgetattr:
      return argc >= 1 ? fill_stat(env, argv[0], c->stat) : -EIO;
    case OP_statfs:
      return argc >= 1 ? fill_statvfs(env, argv[0], c->statvfs) : -EIO;
    case OP_readdir:
      return fill_dir(env, c, argc, argv);
    case OP_getxattr: case OP_listxattr:
      return fill_xattr(env, c, argc, argv);
    case OP_open: case OP_opendir: case OP_create:
      return fill_open(env, c, argc, argv);
    case OP_readlink:
      return fill_readlink(env, c, argc, argv);
    default:
      /* Status-only operations: libfuse wants 0 or -errno. */
      return res == 0 ? 0 : -EIO;
  }
}

/* signal(call, result, ...outputs): finishes one call. Must run exactly once per call. */
static napi_value js_signal (napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "signal: bad arguments");
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "signal(call, result, ...) needs two arguments");
    return NULL;
  }

  fuse_native_call_t *c;
  NAPI_OK(env, napi_get_value_external(env, argv[0], (void **) &c), "signal: bad call handle");

  int32_t res;
  if (napi_get_value_int32(env, argv[1], &res) != napi_ok) res = -EIO;

  size_t outc = argc - 2;
  napi_value *outv = argv + 2;

  if (c->op == OP_read || c->op == OP_write) {
    /* Detach the alias of libfuse's buffer whatever the outcome (P1). */
    bool is_ab = false;
    if (outc >= 1 && napi_is_arraybuffer(env, outv[0], &is_ab) == napi_ok && is_ab) {
      napi_detach_arraybuffer(env, outv[0]);
    }
  }

  if (res >= 0) res = collect_outputs(env, c, res, outc, outv);

  c->res = res;
  uv_sem_post(&c->done);   /* last touch of *c */
  return NULL;
}

static void tsfn_finalize (napi_env env, void *data, void *hint) {
  fuse_native_t *s = (fuse_native_t *) data;
  if (!__atomic_load_n(&s->thread_done, __ATOMIC_ACQUIRE)) {
    /* The environment is going away while the session still runs (process exit without
     * unmount). The session thread may still read *s, so leak it. */
    return;
  }
  pthread_join(s->thread, NULL);
  for (int i = 0; i < OP_COUNT; i++) {
    if (s->handlers[i] != NULL) napi_delete_reference(env, s->handlers[i]);
  }
  if (s->on_exit != NULL) napi_delete_reference(env, s->on_exit);
  napi_async_destroy(env, s->async_context);
  free(s->mountpoint);
  free(s);
}

static void free_unstarted (napi_env env, fuse_native_t *s, struct fuse_args *args) {
  fuse_opt_free_args(args);
  for (int i = 0; i < OP_COUNT; i++) {
    if (s->handlers[i] != NULL) napi_delete_reference(env, s->handlers[i]);
  }
  if (s->on_exit != NULL) napi_delete_reference(env, s->on_exit);
  free(s->mountpoint);
  free(s);
}

static void fill_operations (fuse_native_t *s, struct fuse_operations *ops) {
  memset(ops, 0, sizeof(*ops));
  ops->init = fn_init;   /* always: it tells JS that the kernel connection is up */
#define WIRE(name) if (s->handlers[OP_##name] != NULL) ops->name = fn_##name;
  WIRE(getattr) WIRE(fgetattr) WIRE(access) WIRE(statfs) WIRE(readdir) WIRE(opendir)
  WIRE(releasedir) WIRE(fsyncdir) WIRE(create) WIRE(mknod) WIRE(open) WIRE(release)
  WIRE(flush) WIRE(fsync) WIRE(read) WIRE(write) WIRE(truncate) WIRE(ftruncate) WIRE(mkdir)
  WIRE(rmdir) WIRE(unlink) WIRE(rename) WIRE(link) WIRE(symlink) WIRE(readlink) WIRE(chmod)
  WIRE(chown) WIRE(utimens) WIRE(setxattr) WIRE(getxattr) WIRE(listxattr) WIRE(removexattr)
#undef WIRE
  /* P5: deliver UTIME_NOW / UTIME_OMIT instead of dropping one-sided updates. */
  ops->flag_utime_omit_ok = 1;
}

/* Copies a JS string argument into a malloc'd C string. */
static char *dup_string (napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s == NULL) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

/* Builds fuse_args from a JS array of strings (P7: arbitrary -o options, no length cap). */
static int build_args (napi_env env, napi_value arr, struct fuse_args *args) {
  uint32_t n;
  if (napi_get_array_length(env, arr, &n) != napi_ok) return -1;
  if (fuse_opt_add_arg(args, "zippy-fs") != 0) return -1;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    napi_get_element(env, arr, i, &item);
    char *arg = dup_string(env, item);
    if (arg == NULL) return -1;
    int r = fuse_opt_add_arg(args, arg);
    free(arg);
    if (r != 0) return -1;
  }
  return 0;
}

/*
 * mount(mountpoint, args, handlers, onExit, singleThreaded)
 *   args: string[] passed to libfuse, e.g. ["-o", "use_ino,big_writes"].
 *   handlers: array indexed by op number; a function enables that operation.
 *   onExit(loopResult): called once on the JS thread after the session has ended and
 *   libfuse is torn down (after an unmount, whoever did it).
 * Mounts synchronously and starts the session thread; throws on failure.
 */
static napi_value js_mount (napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "mount: bad arguments");
  if (argc < 5) {
    napi_throw_type_error(env, NULL, "mount(mountpoint, args, handlers, onExit, singleThreaded)");
    return NULL;
  }

  fuse_native_t *s = calloc(1, sizeof(fuse_native_t));
  if (s == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  s->exit_call.op = -1;
  struct fuse_args args = FUSE_ARGS_INIT(0, NULL);

  s->mountpoint = dup_string(env, argv[0]);
  bool single = false;
  napi_get_value_bool(env, argv[4], &single);
  s->single_threaded = single;

  uint32_t handler_count = 0;
  napi_get_array_length(env, argv[2], &handler_count);
  for (uint32_t i = 0; i < handler_count && i < OP_COUNT; i++) {
    napi_value h;
    napi_valuetype t;
    napi_get_element(env, argv[2], i, &h);
    napi_typeof(env, h, &t);
    if (t == napi_function) napi_create_reference(env, h, 1, &s->handlers[i]);
  }
  napi_create_reference(env, argv[3], 1, &s->on_exit);

  if (s->mountpoint == NULL || s->handlers[OP_init] == NULL || build_args(env, argv[1], &args) != 0) {
    free_unstarted(env, s, &args);
    napi_throw_type_error(env, NULL, "mount: bad mountpoint, args or handlers");
    return NULL;
  }

  struct fuse_operations ops;
  fill_operations(s, &ops);

  /* fuse_mount consumes the mount options (allow_other, fsname=, max_read=, ...) and leaves
   * the library options (use_ino, big_writes, attr_timeout=, ...) for fuse_new. */
  s->ch = fuse_mount(s->mountpoint, &args);
  if (s->ch == NULL) {
    free_unstarted(env, s, &args);
    napi_throw_error(env, "EMOUNT", "fuse_mount failed (libfuse printed the reason on stderr)");
    return NULL;
  }

  s->fuse = fuse_new(s->ch, &args, &ops, sizeof(ops), s);
  if (s->fuse == NULL) {
    /* P9: upstream left the kernel mount behind here. */
    fuse_unmount(s->mountpoint, s->ch);
    free_unstarted(env, s, &args);
    napi_throw_error(env, "EMOUNT",
                     "fuse_new failed: unknown or invalid option (libfuse printed it on stderr)");
    return NULL;
  }
  fuse_opt_free_args(&args);

  napi_value resource_name;
  napi_create_string_utf8(env, "zippy-fuse", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &s->async_context);

  if (napi_create_threadsafe_function(env, NULL, NULL, resource_name, 0, 1, s, tsfn_finalize, s,
                                      js_dispatch, &s->tsfn) != napi_ok) {
    fuse_unmount(s->mountpoint, s->ch);
    fuse_destroy(s->fuse);
    napi_async_destroy(env, s->async_context);
    free_unstarted(env, s, &args);
    napi_throw_error(env, "EMOUNT", "napi_create_threadsafe_function failed");
    return NULL;
  }

  /* The session thread and libfuse's workers (which inherit its mask) must not take the
   * process's signals away from the JS thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = pthread_create(&s->thread, NULL, session_thread, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);

  if (err != 0) {
    fuse_unmount(s->mountpoint, s->ch);
    fuse_destroy(s->fuse);
    s->thread_done = 0;   /* finalize must not join; free below instead */
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
    napi_throw_error(env, "EMOUNT", "pthread_create failed");
    return NULL;   /* s is leaked deliberately: the aborted tsfn still references it */
  }
  return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Module
 * ------------------------------------------------------------------------------------ */

static void set_u32 (napi_env env, napi_value obj, const char *key, uint32_t n) {
  napi_set_named_property(env, obj, key, js_u32(env, n));
}

static napi_value init_module (napi_env env, napi_value exports) {
  if (pthread_key_create(&session_key, NULL) != 0) {
    napi_throw_error(env, NULL, "pthread_key_create failed");
    return NULL;
  }

  napi_property_descriptor fns[] = {
    { "mount", NULL, js_mount, NULL, NULL, NULL, napi_default, NULL },
    { "signal", NULL, js_signal, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof(fns) / sizeof(fns[0]), fns);

  napi_value ops;
  napi_create_object(env, &ops);
#define X(name) set_u32(env, ops, #name, OP_##name);
  FUSE_NATIVE_OPS(X)
#undef X
  napi_set_named_property(env, exports, "ops", ops);

  set_u32(env, exports, "opCount", OP_COUNT);
  set_u32(env, exports, "statFieldCount", STAT_FIELD_COUNT);
  set_u32(env, exports, "statfsFieldCount", STATFS_FIELD_COUNT);
  set_u32(env, exports, "UTIME_NOW", (uint32_t) UTIME_NOW);
  set_u32(env, exports, "UTIME_OMIT", (uint32_t) UTIME_OMIT);
  set_u32(env, exports, "fuseVersion", (uint32_t) fuse_version());
  set_u32(env, exports, "bindingVersion", 1);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
