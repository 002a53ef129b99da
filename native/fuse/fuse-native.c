/*
 * fuse-native.c: zippy-fs's N-API binding to the LOW-LEVEL, inode-based libfuse 2.9 API
 * (fuse_lowlevel.h, FUSE_USE_VERSION 29). It started as a patched copy of the fuse-native
 * 2.2.6 binding (fuse-friends/fuse-native, MIT licence, see LICENSE) to the high-level API;
 * PATCHES.md lists what was kept of those patches (P1..P12) and what the low-level port (L1..)
 * changed. Comments below name the entry that introduced a piece of code.
 *
 * How a request travels (L1):
 *   1. A libfuse worker thread enters one of the ll_* operations below with a fuse_req_t. It
 *      allocates a fuse_native_call_t on the heap (arguments, names and write data copied into
 *      it, caller context from fuse_req_ctx()), queues it on the session's
 *      napi_threadsafe_function and RETURNS at once: the worker is free for the next request.
 *   2. On the JS thread, js_dispatch() turns the call into JS values and invokes the handler
 *      registered for that operation as handler(call, uid, gid, pid, umask, ...args), where
 *      `call` is an external wrapping the pointer.
 *   3. The handler (src/fuse/binding.ts) eventually calls signal(call, result, ...outputs)
 *      exactly once. js_signal() replies to the kernel with the matching fuse_reply_*() call
 *      on the JS thread and frees the call. For open, opendir and create it returns what the
 *      reply returned (L9): when the kernel refused the reply, JS releases the handle.
 *
 * Invariants:
 *   - A fuse_native_call_t belongs to the JS thread from dispatch until signal frees it.
 *     binding.ts guarantees that signal runs exactly once per call.
 *   - Buffers that alias call memory (read and write data) are detached by js_signal (P1)
 *     before the call is freed, so JS code that keeps them sees a zero-length buffer.
 *   - Every queued call and every pending invalidation counts in s->inflight. The session
 *     thread tears libfuse down only after its loop has ended AND inflight is 0 (L2), so no
 *     reply ever reaches a destroyed session or channel.
 *   - The session struct lives until the session thread has torn libfuse down and the
 *     threadsafe function is finalized (P8); nothing frees it earlier.
 */

#define FUSE_USE_VERSION 29

#include <node_api.h>
#include <uv.h>

#include <fuse_lowlevel.h>
#include <fuse_opt.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------
 * Operation table. The X-macro keeps the enum and the exported name map in one list.
 * forget/forget_multi never reach JS (L3).
 * ------------------------------------------------------------------------------------ */

#define FUSE_NATIVE_OPS(X)                                                                  \
  X(init) X(lookup) X(getattr) X(setattr) X(readlink) X(mknod) X(mkdir) X(unlink) X(rmdir)  \
  X(symlink) X(rename) X(link) X(open) X(read) X(write) X(flush) X(release) X(fsync)        \
  X(opendir) X(readdir) X(releasedir) X(fsyncdir) X(statfs) X(setxattr) X(getxattr)         \
  X(listxattr) X(removexattr) X(access) X(create)

enum {
#define X(name) OP_##name,
  FUSE_NATIVE_OPS(X)
#undef X
  OP_COUNT
};

/* Layout of the Float64Array a handler answers with for an attribute or entry (P2, P3).
 * binding.ts has the same table and checks STAT_FIELD_COUNT at load. */
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

/* Layout of the Float64Array of cache timeouts given to mount (L4), in seconds. */
enum { TIMEOUT_ENTRY, TIMEOUT_ATTR, TIMEOUT_NEGATIVE, TIMEOUT_FIELD_COUNT };

/* Bits of the optional open/create reply flags (P11). */
enum { OPEN_DIRECT_IO = 1, OPEN_KEEP_CACHE = 2, OPEN_NONSEEKABLE = 4 };

/* Largest number of arguments js_dispatch passes: call + 4 context values + 11 (setattr). */
#define DISPATCH_ARGC_MAX 16

/* ---------------------------------------------------------------------------------------
 * Data structures
 * ------------------------------------------------------------------------------------ */

typedef struct fuse_native fuse_native_t;

/* One in-flight request; heap-allocated by the libfuse thread, freed by js_signal (L1). */
typedef struct {
  int op;
  fuse_native_t *s;
  fuse_req_t req;               /* NULL for init */

  /* Caller context from fuse_req_ctx() (P4). */
  uid_t uid;
  gid_t gid;
  pid_t pid;
  mode_t umask;

  /* Inputs. */
  fuse_ino_t ino;               /* the inode, or the parent directory of `name` */
  fuse_ino_t ino2;              /* rename's new parent, link's new parent */
  const char *name;             /* entry name, xattr name; points into `tail` */
  const char *name2;            /* rename/link new name, symlink target; into `tail` */
  struct fuse_file_info fi;
  int has_fi;
  char *data;                   /* write data and setxattr value (copies), read buffer */
  size_t size;                  /* read/write length, xattr/readdir buffer size */
  off_t offset;                 /* read/write/readdir offset */
  mode_t mode;                  /* mode, access mask */
  dev_t rdev;
  int flags;                    /* setxattr flags, fsync datasync */
  int to_set;                   /* setattr FUSE_SET_ATTR_* mask */
  struct stat attr;             /* setattr values */
  struct fuse_conn_info conn;   /* init */

  char tail[];                  /* names, then data */
} fuse_native_call_t;

/* One mounted filesystem. Allocated by js_mount, freed by tsfn_finalize (P8). */
struct fuse_native {
  napi_threadsafe_function tsfn;
  napi_async_context async_context;
  napi_ref handlers[OP_COUNT];
  napi_ref on_exit;

  struct fuse_session *se;
  struct fuse_chan *ch;
  char *mountpoint;
  int single_threaded;
  double timeouts[TIMEOUT_FIELD_COUNT];

  pthread_t thread;
  int thread_done;              /* written by the session thread just before its last post */
  int loop_result;

  /* L8: the JS thread reads the device itself (no libfuse worker threads). */
  int in_loop;
  napi_env env;                 /* set while the JS thread processes requests */
  napi_env env_for_poll;
  uv_poll_t poll;
  char *recv_buf;
  size_t recv_size;

  /* L2: calls queued but not yet answered, and invalidations not yet sent. */
  pthread_mutex_t lock;
  pthread_cond_t idle;
  long inflight;
  int loop_ended;

  /* Marker queued once through the tsfn when the session has ended. */
  fuse_native_call_t exit_call;
};

/* ---------------------------------------------------------------------------------------
 * In-flight accounting (L2)
 * ------------------------------------------------------------------------------------ */

static void inflight_add (fuse_native_t *s) {
  pthread_mutex_lock(&s->lock);
  s->inflight++;
  pthread_mutex_unlock(&s->lock);
}

static void inflight_done (fuse_native_t *s) {
  pthread_mutex_lock(&s->lock);
  if (--s->inflight == 0) pthread_cond_broadcast(&s->idle);
  pthread_mutex_unlock(&s->lock);
}

static void call_free (fuse_native_call_t *c) {
  fuse_native_t *s = c->s;
  free(c);
  inflight_done(s);
}

/* ---------------------------------------------------------------------------------------
 * libfuse side: runs on libfuse threads, never touches napi_env.
 * ------------------------------------------------------------------------------------ */

/* A call with room for two names and `data_size` bytes of data. */
static fuse_native_call_t *call_new (fuse_req_t req, int op, const char *name, const char *name2,
                                     size_t data_size) {
  size_t n1 = name == NULL ? 0 : strlen(name) + 1;
  size_t n2 = name2 == NULL ? 0 : strlen(name2) + 1;
  fuse_native_call_t *c = calloc(1, sizeof(fuse_native_call_t) + n1 + n2 + data_size);
  if (c == NULL) {
    if (req != NULL) fuse_reply_err(req, ENOMEM);
    return NULL;
  }
  c->op = op;
  c->req = req;
  c->s = req == NULL ? NULL : (fuse_native_t *) fuse_req_userdata(req);
  char *p = c->tail;
  if (name != NULL) { memcpy(p, name, n1); c->name = p; p += n1; }
  if (name2 != NULL) { memcpy(p, name2, n2); c->name2 = p; p += n2; }
  c->data = data_size > 0 ? p : NULL;
  c->size = data_size;
  if (req != NULL) {
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    c->uid = ctx->uid;
    c->gid = ctx->gid;
    c->pid = ctx->pid;
    c->umask = ctx->umask;
  }
  return c;
}

static void js_dispatch (napi_env env, napi_value unused, void *context, void *data);

/* Queues `c` for the JS thread; on failure answers EIO here. Never blocks for the answer.
 * When the JS thread itself is processing the request (L8), the handler runs at once. */
static void submit (fuse_native_call_t *c) {
  fuse_native_t *s = c->s;
  inflight_add(s);
  if (s->handlers[c->op] == NULL) {
    if (c->req != NULL) fuse_reply_err(c->req, ENOSYS);
    call_free(c);
    return;
  }
  if (s->env != NULL) {
    js_dispatch(s->env, NULL, s, c);
    return;
  }
  if (napi_call_threadsafe_function(s->tsfn, c, napi_tsfn_blocking) != napi_ok) {
    /* The environment is shutting down: nobody will ever answer. */
    if (c->req != NULL) fuse_reply_err(c->req, EIO);
    call_free(c);
  }
}

static void set_fi (fuse_native_call_t *c, struct fuse_file_info *fi) {
  if (fi == NULL) return;
  c->fi = *fi;
  c->has_fi = 1;
}

#define NEW(op, name, name2, size)                                                          \
  fuse_native_call_t *c = call_new(req, (op), (name), (name2), (size));                     \
  if (c == NULL) return

static void ll_init (void *userdata, struct fuse_conn_info *conn) {
  fuse_native_t *s = (fuse_native_t *) userdata;
  fuse_native_call_t *c = call_new(NULL, OP_init, NULL, NULL, 0);
  if (c == NULL) return;
  c->s = s;
  c->conn = *conn;
  submit(c);   /* tells JS that the kernel connection is up; no reply */
}

static void ll_lookup (fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW(OP_lookup, name, NULL, 0);
  c->ino = parent;
  submit(c);
}

/* L3: the file system keeps no per-lookup state (nodeid = inode number, inodes are freed by
 * unlink/release as on a kernel file system), so forgets are answered here. */
static void ll_forget (fuse_req_t req, fuse_ino_t ino, unsigned long nlookup) {
  fuse_reply_none(req);
}

static void ll_forget_multi (fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  fuse_reply_none(req);
}

static void ll_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_getattr, NULL, NULL, 0);
  c->ino = ino;
  set_fi(c, fi);
  submit(c);
}

static void ll_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                        struct fuse_file_info *fi) {
  NEW(OP_setattr, NULL, NULL, 0);
  c->ino = ino;
  c->attr = *attr;
  c->to_set = to_set;
  set_fi(c, fi);
  submit(c);
}

static void ll_readlink (fuse_req_t req, fuse_ino_t ino) {
  NEW(OP_readlink, NULL, NULL, 0);
  c->ino = ino;
  submit(c);
}

static void ll_mknod (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  NEW(OP_mknod, name, NULL, 0);
  c->ino = parent;
  c->mode = mode;
  c->rdev = rdev;
  submit(c);
}

static void ll_mkdir (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  NEW(OP_mkdir, name, NULL, 0);
  c->ino = parent;
  c->mode = mode;
  submit(c);
}

static void ll_unlink (fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW(OP_unlink, name, NULL, 0);
  c->ino = parent;
  submit(c);
}

static void ll_rmdir (fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW(OP_rmdir, name, NULL, 0);
  c->ino = parent;
  submit(c);
}

static void ll_symlink (fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  NEW(OP_symlink, name, link, 0);
  c->ino = parent;
  submit(c);
}

static void ll_rename (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                       const char *newname) {
  NEW(OP_rename, name, newname, 0);
  c->ino = parent;
  c->ino2 = newparent;
  submit(c);
}

static void ll_link (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  NEW(OP_link, newname, NULL, 0);
  c->ino = ino;
  c->ino2 = newparent;
  submit(c);
}

static void ll_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_open, NULL, NULL, 0);
  c->ino = ino;
  set_fi(c, fi);
  submit(c);
}

static void ll_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  NEW(OP_read, NULL, NULL, size);
  c->ino = ino;
  c->offset = off;
  set_fi(c, fi);
  submit(c);
}

/* The data lives in the worker's receive buffer, reused for its next request: copied (L1). */
static void ll_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                      struct fuse_file_info *fi) {
  NEW(OP_write, NULL, NULL, size);
  if (size > 0) memcpy(c->data, buf, size);
  c->ino = ino;
  c->offset = off;
  set_fi(c, fi);
  submit(c);
}

static void ll_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_flush, NULL, NULL, 0);
  c->ino = ino;
  set_fi(c, fi);
  submit(c);
}

static void ll_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_release, NULL, NULL, 0);
  c->ino = ino;
  set_fi(c, fi);
  submit(c);
}

static void ll_fsync (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW(OP_fsync, NULL, NULL, 0);
  c->ino = ino;
  c->flags = datasync;
  set_fi(c, fi);
  submit(c);
}

static void ll_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_opendir, NULL, NULL, 0);
  c->ino = ino;
  set_fi(c, fi);
  submit(c);
}

static void ll_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  NEW(OP_readdir, NULL, NULL, 0);
  c->ino = ino;
  c->size = size;
  c->offset = off;
  set_fi(c, fi);
  submit(c);
}

static void ll_releasedir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_releasedir, NULL, NULL, 0);
  c->ino = ino;
  set_fi(c, fi);
  submit(c);
}

static void ll_fsyncdir (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW(OP_fsyncdir, NULL, NULL, 0);
  c->ino = ino;
  c->flags = datasync;
  set_fi(c, fi);
  submit(c);
}

static void ll_statfs (fuse_req_t req, fuse_ino_t ino) {
  NEW(OP_statfs, NULL, NULL, 0);
  c->ino = ino;
  submit(c);
}

static void ll_setxattr (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                         size_t size, int flags) {
  NEW(OP_setxattr, name, NULL, size);
  if (size > 0) memcpy(c->data, value, size);
  c->ino = ino;
  c->flags = flags;
  submit(c);
}

static void ll_getxattr (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  NEW(OP_getxattr, name, NULL, 0);
  c->ino = ino;
  c->size = size;
  submit(c);
}

static void ll_listxattr (fuse_req_t req, fuse_ino_t ino, size_t size) {
  NEW(OP_listxattr, NULL, NULL, 0);
  c->ino = ino;
  c->size = size;
  submit(c);
}

static void ll_removexattr (fuse_req_t req, fuse_ino_t ino, const char *name) {
  NEW(OP_removexattr, name, NULL, 0);
  c->ino = ino;
  submit(c);
}

static void ll_access (fuse_req_t req, fuse_ino_t ino, int mask) {
  NEW(OP_access, NULL, NULL, 0);
  c->ino = ino;
  c->mode = (mode_t) mask;
  submit(c);
}

static void ll_create (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                       struct fuse_file_info *fi) {
  NEW(OP_create, name, NULL, 0);
  c->ino = parent;
  c->mode = mode;
  set_fi(c, fi);
  submit(c);
}

/* Runs the session loop, waits for every answer, then tears libfuse down in the order of
 * libfuse's hello_ll example (P8, L2). */
static void *teardown_thread (void *data);

static void *session_thread (void *data) {
  fuse_native_t *s = (fuse_native_t *) data;
  s->loop_result = s->single_threaded ? fuse_session_loop(s->se) : fuse_session_loop_mt(s->se);
  return teardown_thread(s);
}

static void *teardown_thread (void *data) {
  fuse_native_t *s = (fuse_native_t *) data;

  pthread_mutex_lock(&s->lock);
  s->loop_ended = 1;
  while (s->inflight > 0) pthread_cond_wait(&s->idle, &s->lock);
  pthread_mutex_unlock(&s->lock);

  fuse_session_remove_chan(s->ch);
  fuse_session_destroy(s->se);
  s->se = NULL;
  /* Closes the channel fd; if the kernel mount still exists (the loop ended for another
   * reason than an unmount) libfuse detaches it lazily. Destroys the channel. */
  fuse_unmount(s->mountpoint, s->ch);
  s->ch = NULL;

  __atomic_store_n(&s->thread_done, 1, __ATOMIC_RELEASE);
  napi_call_threadsafe_function(s->tsfn, &s->exit_call, napi_tsfn_blocking);
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  return NULL;
}

/* L5: kernel cache invalidation runs on its own short-lived thread: the kernel may wait in it
 * for a page lock held by a read that only the JS thread can answer. */
typedef struct {
  fuse_native_t *s;
  fuse_ino_t ino;
} inval_t;

static void *inval_thread (void *data) {
  inval_t *iv = (inval_t *) data;
  fuse_native_t *s = iv->s;
  /* The channel is destroyed only after inflight drops to 0, which includes this thread. */
  fuse_lowlevel_notify_inval_inode(s->ch, iv->ino, 0, 0);
  free(iv);
  inflight_done(s);
  return NULL;
}

/* ---------------------------------------------------------------------------------------
 * JS side: runs on the JS thread only.
 * ------------------------------------------------------------------------------------ */

/* Largest number of requests read per poll callback, so timers and I/O are not starved. */
#define POLL_BATCH_MAX 64

/*
 * L11: after answering, keep reading the (non-blocking) device for up to this long before going
 * back to the event loop: a caller that sends its next request right after our answer (stat,
 * ls -l, a create's several requests) finds the JS thread awake instead of paying a wake-up.
 */
#define POLL_SPIN_NS 50000L

static int64_t monotonic_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void poll_closed (uv_handle_t *handle) {
  (void) handle;   /* the handle lives in the session struct, freed by tsfn_finalize */
}

/* Starts the teardown thread once the device reported the end of the session (L8). */
static void in_loop_end (fuse_native_t *s) {
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *) &s->poll, poll_closed);
  s->loop_result = 0;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = pthread_create(&s->thread, NULL, teardown_thread, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err != 0) {
    fprintf(stderr, "zippy-fs fuse: cannot start the teardown thread (%d); the session leaks\n", err);
  }
}

/*
 * L8: the device is readable: read and process requests on the JS thread. Each request is
 * handed to its JS handler directly (submit() sees s->env), so a request costs one wake-up of
 * the JS thread instead of a libfuse worker's wake-up plus a hand-off to the JS thread.
 */
static void on_readable (uv_poll_t *handle, int status, int events) {
  fuse_native_t *s = (fuse_native_t *) handle->data;
  napi_env env = s->env_for_poll;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  s->env = env;
  int ended = 0;
  int64_t idle_since = 0;   /* when the device was last found empty; 0 while requests come */
  for (int i = 0; i < POLL_BATCH_MAX; ) {
    struct fuse_chan *ch = s->ch;
    int res = fuse_chan_recv(&ch, s->recv_buf, s->recv_size);
    if (res == -EAGAIN || res == -EINTR) {
      int64_t now = monotonic_ns();
      if (idle_since == 0) idle_since = now;
      if (i == 0 || now - idle_since >= POLL_SPIN_NS) break;
      continue;
    }
    if (res <= 0 || fuse_session_exited(s->se)) { ended = 1; break; }
    idle_since = 0;
    i++;
    fuse_session_process(s->se, s->recv_buf, (size_t) res, ch);
  }
  s->env = NULL;
  napi_close_handle_scope(env, scope);
  if (!ended && status < 0) ended = 1;
  if (ended) in_loop_end(s);
}

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

/* The file handle, or -1 when the request carries none (getattr/setattr without an open file). */
static napi_value js_fh (napi_env env, const fuse_native_call_t *c) {
  return js_num(env, c->has_fi ? (double) c->fi.fh : -1);
}

/* A Buffer aliasing call memory; js_signal detaches it (P1). */
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
      argv[n++] = js_u32(env, c->conn.proto_major);
      argv[n++] = js_u32(env, c->conn.proto_minor);
      argv[n++] = js_u32(env, c->conn.max_write);
      argv[n++] = js_u32(env, c->conn.max_readahead);
      argv[n++] = js_u32(env, c->conn.capable);
      argv[n++] = js_u32(env, c->conn.want);
      break;
    case OP_lookup: case OP_unlink: case OP_rmdir: case OP_removexattr:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      break;
    case OP_getattr: case OP_flush:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_fh(env, c);
      break;
    case OP_setattr:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_fh(env, c);
      argv[n++] = js_i32(env, c->to_set);
      argv[n++] = js_u32(env, c->attr.st_mode);
      argv[n++] = js_id(env, c->attr.st_uid);
      argv[n++] = js_id(env, c->attr.st_gid);
      argv[n++] = js_num(env, (double) c->attr.st_size);
      /* Seconds and nanoseconds separately (P5); *_NOW arrives as a to_set bit. */
      argv[n++] = js_num(env, (double) c->attr.st_atim.tv_sec);
      argv[n++] = js_num(env, (double) c->attr.st_atim.tv_nsec);
      argv[n++] = js_num(env, (double) c->attr.st_mtim.tv_sec);
      argv[n++] = js_num(env, (double) c->attr.st_mtim.tv_nsec);
      break;
    case OP_readlink: case OP_statfs:
      argv[n++] = js_num(env, (double) c->ino);
      break;
    case OP_mknod:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      argv[n++] = js_u32(env, c->mode);
      argv[n++] = js_num(env, (double) c->rdev);
      break;
    case OP_mkdir:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      argv[n++] = js_u32(env, c->mode);
      break;
    case OP_symlink:
      /* (target, parent, name) */
      argv[n++] = js_str(env, c->name2);
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      break;
    case OP_rename:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      argv[n++] = js_num(env, (double) c->ino2);
      argv[n++] = js_str(env, c->name2);
      break;
    case OP_link:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_num(env, (double) c->ino2);
      argv[n++] = js_str(env, c->name);
      break;
    case OP_open: case OP_opendir:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_i32(env, c->fi.flags);
      break;
    case OP_read: case OP_write:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_fh(env, c);
      argv[n++] = js_alias_buffer(env, c->data, c->size);
      argv[n++] = js_num(env, (double) c->offset);
      break;
    case OP_release: case OP_releasedir:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_fh(env, c);
      argv[n++] = js_i32(env, c->fi.flags);
      break;
    case OP_fsync: case OP_fsyncdir:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_u32(env, c->flags != 0);
      argv[n++] = js_fh(env, c);
      break;
    case OP_readdir:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_fh(env, c);
      argv[n++] = js_num(env, (double) c->offset);
      argv[n++] = js_num(env, (double) c->size);
      break;
    case OP_setxattr: {
      /* A copy, not an alias: handlers may keep xattr values (P6). */
      napi_value value;
      if (napi_create_buffer_copy(env, c->size, c->size ? c->data : "", NULL, &value) != napi_ok) {
        napi_get_undefined(env, &value);
      }
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      argv[n++] = value;
      argv[n++] = js_i32(env, c->flags);
      break;
    }
    case OP_getxattr:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      argv[n++] = js_num(env, (double) c->size);
      break;
    case OP_listxattr:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_num(env, (double) c->size);
      break;
    case OP_access:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_u32(env, c->mode);
      break;
    case OP_create:
      argv[n++] = js_num(env, (double) c->ino);
      argv[n++] = js_str(env, c->name);
      argv[n++] = js_u32(env, c->mode);
      argv[n++] = js_i32(env, c->fi.flags);
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

  if (env == NULL) {
    /* Environment torn down: nobody will answer. */
    if (c->req != NULL) fuse_reply_err(c->req, EIO);
    call_free(c);
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

  /* The handler may answer at once, and signal() frees the call: read nothing from *c after
   * the callback. */
  int op = c->op;
  make_callback(env, s, s->handlers[op], argc, argv);
  /* init has no reply: the handler only learns that the connection is up. */
  if (op == OP_init) call_free(c);
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
  /* An empty array may have no backing store; NULL means "not a Float64Array" here. */
  static double empty[1];
  return data == NULL ? empty : (double *) data;
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

/* An entry: nodeid = st_ino (L3), generation 0 (inode numbers are never reused). */
static int fill_entry (napi_env env, fuse_native_t *s, napi_value v, struct fuse_entry_param *e) {
  memset(e, 0, sizeof(*e));
  if (fill_stat(env, v, &e->attr) != 0) return -EIO;
  if (e->attr.st_ino == 0) return -EIO;
  e->ino = e->attr.st_ino;
  e->generation = 0;
  e->attr_timeout = s->timeouts[TIMEOUT_ATTR];
  e->entry_timeout = s->timeouts[TIMEOUT_ENTRY];
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

static void fill_fi (napi_env env, struct fuse_file_info *fi, size_t argc, napi_value *argv) {
  if (argc >= 1) {
    double fh;
    if (napi_get_value_double(env, argv[0], &fh) == napi_ok) fi->fh = (uint64_t) fh;
  }
  fi->direct_io = 0;
  fi->keep_cache = 0;
  fi->nonseekable = 0;
  if (argc >= 2) {
    uint32_t bits;
    if (napi_get_value_uint32(env, argv[1], &bits) == napi_ok) {
      if (bits & OPEN_DIRECT_IO) fi->direct_io = 1;
      if (bits & OPEN_KEEP_CACHE) fi->keep_cache = 1;
      if (bits & OPEN_NONSEEKABLE) fi->nonseekable = 1;
    }
  }
}

/*
 * readdir (L6): JS answers with the entries from `offset` on, as one buffer of NUL-terminated
 * names and a Float64Array of (ino, mode) pairs (P10: one crossing for many entries). Entry i
 * of the answer gets the cookie offset + i + 1, so the kernel's next readdir asks for exactly
 * the entries that did not fit into its `size` bytes.
 */
static int reply_dir (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  char *names;
  size_t names_len;
  if (argc < 2 || get_bytes(env, argv[0], &names, &names_len) != 0) return -EIO;
  size_t stat_len = 0;
  const double *stats = get_f64(env, argv[1], 0, &stat_len);
  if (stats == NULL) return -EIO;

  char *buf = malloc(c->size > 0 ? c->size : 1);
  if (buf == NULL) return -ENOMEM;
  size_t used = 0;
  size_t index = 0;
  size_t pos = 0;
  while (pos < names_len) {
    const char *name = names + pos;
    const char *end = memchr(name, '\0', names_len - pos);
    if (end == NULL || 2 * index + 1 >= stat_len) { free(buf); return -EIO; }
    pos = (size_t) (end - names) + 1;
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = (ino_t) stats[2 * index];
    st.st_mode = (mode_t) stats[2 * index + 1];
    index++;
    size_t need = fuse_add_direntry(c->req, NULL, 0, name, NULL, 0);
    if (used + need > c->size) break;
    fuse_add_direntry(c->req, buf + used, c->size - used, name, &st, c->offset + (off_t) index);
    used += need;
  }
  fuse_reply_buf(c->req, buf, used);
  free(buf);
  return 0;
}

/* getxattr/listxattr: JS hands over the whole value; the size protocol is done here (P6):
 * size 0 asks for the needed length, a too-small buffer is ERANGE, never an overrun. */
static int reply_xattr (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  char *data;
  size_t len;
  if (argc < 1 || get_bytes(env, argv[0], &data, &len) != 0) return -EIO;
  if (len > INT32_MAX) return -E2BIG;
  if (c->size == 0) { fuse_reply_xattr(c->req, len); return 0; }
  if (len > c->size) return -ERANGE;
  fuse_reply_buf(c->req, data, len);
  return 0;
}

static int reply_readlink (napi_env env, fuse_native_call_t *c, size_t argc, napi_value *argv) {
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) return -EIO;
  char *target = malloc(len + 1);
  if (target == NULL) return -ENOMEM;
  napi_get_value_string_utf8(env, argv[0], target, len + 1, &len);
  fuse_reply_readlink(c->req, target);
  free(target);
  return 0;
}

/* Replies to a successful (res >= 0) call with its outputs. Returns 0 when it replied, or a
 * negative errno for the caller to reply with instead. For open, opendir and create, *sent
 * gets what fuse_reply_open/create returned: -ENOENT when the opener was interrupted or the
 * connection aborted meanwhile, and the kernel then holds no handle and will never release
 * it (L9). */
static int reply_ok (napi_env env, fuse_native_call_t *c, int res, size_t argc, napi_value *argv, int *sent) {
  fuse_native_t *s = c->s;
  switch (c->op) {
    case OP_read:
      if ((size_t) res > c->size) return -EIO;
      fuse_reply_buf(c->req, c->data, (size_t) res);
      return 0;
    case OP_write:
      if ((size_t) res > c->size) return -EIO;
      fuse_reply_write(c->req, (size_t) res);
      return 0;
    case OP_lookup: case OP_mknod: case OP_mkdir: case OP_symlink: case OP_link: {
      struct fuse_entry_param e;
      if (argc < 1 || fill_entry(env, s, argv[0], &e) != 0) return -EIO;
      fuse_reply_entry(c->req, &e);
      return 0;
    }
    case OP_create: {
      struct fuse_entry_param e;
      if (argc < 1 || fill_entry(env, s, argv[0], &e) != 0) return -EIO;
      fill_fi(env, &c->fi, argc - 1, argv + 1);
      *sent = fuse_reply_create(c->req, &e, &c->fi);
      return 0;
    }
    case OP_getattr: case OP_setattr: {
      struct stat st;
      if (argc < 1 || fill_stat(env, argv[0], &st) != 0) return -EIO;
      fuse_reply_attr(c->req, &st, s->timeouts[TIMEOUT_ATTR]);
      return 0;
    }
    case OP_open: case OP_opendir:
      fill_fi(env, &c->fi, argc, argv);
      *sent = fuse_reply_open(c->req, &c->fi);
      return 0;
    case OP_statfs: {
      struct statvfs sv;
      if (argc < 1 || fill_statvfs(env, argv[0], &sv) != 0) return -EIO;
      fuse_reply_statfs(c->req, &sv);
      return 0;
    }
    case OP_readdir:
      return reply_dir(env, c, argc, argv);
    case OP_getxattr: case OP_listxattr:
      return reply_xattr(env, c, argc, argv);
    case OP_readlink:
      return reply_readlink(env, c, argc, argv);
    default:
      /* Status-only operations. */
      if (res != 0) return -EIO;
      fuse_reply_err(c->req, 0);
      return 0;
  }
}

/* signal(call, result, ...outputs): answers one call. Must run exactly once per call.
 * Returns 0, or the negative errno of an open, opendir or create reply the kernel refused
 * (L9: the caller must then release the handle it answered with). */
static napi_value js_signal (napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "signal: bad arguments");
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "signal(call, result, ...) needs two arguments");
    return NULL;
  }

  fuse_native_call_t *c;
  NAPI_OK(env, napi_get_value_external(env, argv[0], (void **) &c), "signal: bad call handle");
  if (c->req == NULL) return js_i32(env, 0);   /* init: nothing to answer */

  int32_t res;
  if (napi_get_value_int32(env, argv[1], &res) != napi_ok) res = -EIO;

  size_t outc = argc - 2;
  napi_value *outv = argv + 2;

  if (c->op == OP_read || c->op == OP_write) {
    /* Detach the alias of the call's buffer whatever the outcome (P1). */
    bool is_ab = false;
    if (outc >= 1 && napi_is_arraybuffer(env, outv[0], &is_ab) == napi_ok && is_ab) {
      napi_detach_arraybuffer(env, outv[0]);
    }
  }

  int sent = 0;
  if (res >= 0) res = reply_ok(env, c, res, outc, outv, &sent);
  if (res < 0) {
    if (res == -ENOENT && c->op == OP_lookup && c->s->timeouts[TIMEOUT_NEGATIVE] > 0) {
      /* A negative entry the kernel may cache (negative_timeout). */
      struct fuse_entry_param e;
      memset(&e, 0, sizeof(e));
      e.entry_timeout = c->s->timeouts[TIMEOUT_NEGATIVE];
      fuse_reply_entry(c->req, &e);
    } else {
      fuse_reply_err(c->req, -res);
    }
  }
  call_free(c);   /* last touch of *c */
  return js_i32(env, sent);
}

/*
 * invalidate(session, ino): drops the kernel's cached attributes and pages of `ino` (L5),
 * e.g. after another machine's version of the file was installed. Returns at once; the
 * notification is sent from a helper thread. False when the session has ended.
 */
static napi_value js_invalidate (napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "invalidate: bad arguments");
  napi_value result;
  fuse_native_t *s;
  double ino;
  if (argc < 2 || napi_get_value_external(env, argv[0], (void **) &s) != napi_ok ||
      napi_get_value_double(env, argv[1], &ino) != napi_ok) {
    napi_throw_type_error(env, NULL, "invalidate(session, ino)");
    return NULL;
  }
  pthread_mutex_lock(&s->lock);
  int live = !s->loop_ended;
  if (live) s->inflight++;
  pthread_mutex_unlock(&s->lock);
  if (live) {
    inval_t *iv = malloc(sizeof(inval_t));
    pthread_t t;
    pthread_attr_t attr;
    int started = 0;
    if (iv != NULL) {
      iv->s = s;
      iv->ino = (fuse_ino_t) ino;
      sigset_t all, old;
      sigfillset(&all);
      pthread_attr_init(&attr);
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      started = pthread_create(&t, &attr, inval_thread, iv) == 0;
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      pthread_attr_destroy(&attr);
    }
    if (!started) {
      free(iv);
      inflight_done(s);
      live = 0;
    }
  }
  napi_get_boolean(env, live, &result);
  return result;
}

static void free_session (napi_env env, fuse_native_t *s) {
  for (int i = 0; i < OP_COUNT; i++) {
    if (s->handlers[i] != NULL) napi_delete_reference(env, s->handlers[i]);
  }
  if (s->on_exit != NULL) napi_delete_reference(env, s->on_exit);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->idle);
  free(s->recv_buf);
  free(s->mountpoint);
  free(s);
}

static void tsfn_finalize (napi_env env, void *data, void *hint) {
  fuse_native_t *s = (fuse_native_t *) data;
  if (!__atomic_load_n(&s->thread_done, __ATOMIC_ACQUIRE)) {
    /* The environment is going away while the session still runs (process exit without
     * unmount). The session thread may still read *s, so leak it. */
    return;
  }
  pthread_join(s->thread, NULL);
  napi_async_destroy(env, s->async_context);
  free_session(env, s);
}

static void free_unstarted (napi_env env, fuse_native_t *s, struct fuse_args *args) {
  fuse_opt_free_args(args);
  free_session(env, s);
}

static void fill_operations (fuse_native_t *s, struct fuse_lowlevel_ops *ops) {
  memset(ops, 0, sizeof(*ops));
  ops->init = ll_init;   /* always: it tells JS that the kernel connection is up */
  ops->forget = ll_forget;
  ops->forget_multi = ll_forget_multi;
  /* An operation without a handler stays NULL: libfuse answers ENOSYS and the kernel falls
   * back where it can (e.g. create -> mknod + open). */
#define WIRE(name) if (s->handlers[OP_##name] != NULL) ops->name = ll_##name;
  WIRE(lookup) WIRE(getattr) WIRE(setattr) WIRE(readlink) WIRE(mknod) WIRE(mkdir)
  WIRE(unlink) WIRE(rmdir) WIRE(symlink) WIRE(rename) WIRE(link) WIRE(open) WIRE(read)
  WIRE(write) WIRE(flush) WIRE(release) WIRE(fsync) WIRE(opendir) WIRE(readdir)
  WIRE(releasedir) WIRE(fsyncdir) WIRE(statfs) WIRE(setxattr) WIRE(getxattr) WIRE(listxattr)
  WIRE(removexattr) WIRE(access) WIRE(create)
#undef WIRE
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
 * mount(mountpoint, args, handlers, onExit, singleThreaded, timeouts) -> session
 *   args: string[] passed to libfuse, e.g. ["-o", "big_writes,allow_other"].
 *   handlers: array indexed by op number; a function enables that operation.
 *   onExit(loopResult): called once on the JS thread after the session has ended and
 *   libfuse is torn down (after an unmount, whoever did it).
 *   timeouts: Float64Array [entry, attr, negative] cache timeouts in seconds (L4).
 * Mounts synchronously and starts the session thread; throws on failure. Returns an external
 * for invalidate(); it stays valid until onExit has run.
 */
static napi_value js_mount (napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  argv[6] = NULL;
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "mount: bad arguments");
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "mount(mountpoint, args, handlers, onExit, singleThreaded, timeouts)");
    return NULL;
  }

  fuse_native_t *s = calloc(1, sizeof(fuse_native_t));
  if (s == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  s->exit_call.op = -1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->idle, NULL);
  struct fuse_args args = FUSE_ARGS_INIT(0, NULL);

  s->mountpoint = dup_string(env, argv[0]);
  bool single = false;
  napi_get_value_bool(env, argv[4], &single);
  s->single_threaded = single;
  bool in_loop = false;
  if (argc >= 7) napi_get_value_bool(env, argv[6], &in_loop);
  s->in_loop = in_loop;
  const double *timeouts = get_f64(env, argv[5], TIMEOUT_FIELD_COUNT, NULL);
  if (timeouts != NULL) memcpy(s->timeouts, timeouts, sizeof(s->timeouts));

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

  if (s->mountpoint == NULL || timeouts == NULL || s->handlers[OP_init] == NULL ||
      build_args(env, argv[1], &args) != 0) {
    free_unstarted(env, s, &args);
    napi_throw_type_error(env, NULL, "mount: bad mountpoint, args, handlers or timeouts");
    return NULL;
  }

  struct fuse_lowlevel_ops ops;
  fill_operations(s, &ops);

  /* fuse_mount consumes the mount options (allow_other, default_permissions, fsname=,
   * subtype=, max_read=, ...) and leaves the session options (big_writes, max_write=,
   * atomic_o_trunc, debug, ...) for fuse_lowlevel_new, which rejects anything else. */
  s->ch = fuse_mount(s->mountpoint, &args);
  if (s->ch == NULL) {
    free_unstarted(env, s, &args);
    napi_throw_error(env, "EMOUNT", "fuse_mount failed (libfuse printed the reason on stderr)");
    return NULL;
  }

  /* L10: the device descriptor must not leak into child processes. A child holding it keeps the
   * connection alive, so a child that itself waits on the mount (a shell writing into it, say)
   * would wait forever once the mount process is gone. libfuse 2.9 opens it without O_CLOEXEC. */
  fcntl(fuse_chan_fd(s->ch), F_SETFD, FD_CLOEXEC);

  s->se = fuse_lowlevel_new(&args, &ops, sizeof(ops), s);
  if (s->se == NULL) {
    /* P9: never leave the kernel mount behind. */
    fuse_unmount(s->mountpoint, s->ch);
    free_unstarted(env, s, &args);
    napi_throw_error(env, "EMOUNT",
                     "fuse_lowlevel_new failed: unknown or invalid option (libfuse printed it on stderr)");
    return NULL;
  }
  fuse_opt_free_args(&args);
  fuse_session_add_chan(s->se, s->ch);

  napi_value resource_name;
  napi_create_string_utf8(env, "zippy-fuse", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &s->async_context);

  if (napi_create_threadsafe_function(env, NULL, NULL, resource_name, 0, 1, s, tsfn_finalize, s,
                                      js_dispatch, &s->tsfn) != napi_ok) {
    fuse_session_remove_chan(s->ch);
    fuse_session_destroy(s->se);
    fuse_unmount(s->mountpoint, s->ch);
    napi_async_destroy(env, s->async_context);
    free_session(env, s);
    napi_throw_error(env, "EMOUNT", "napi_create_threadsafe_function failed");
    return NULL;
  }

  if (s->in_loop) {
    uv_loop_t *loop = NULL;
    int fd = fuse_chan_fd(s->ch);
    s->recv_size = fuse_chan_bufsize(s->ch);
    s->recv_buf = malloc(s->recv_size);
    int flags = fcntl(fd, F_GETFL);
    if (s->recv_buf == NULL || napi_get_uv_event_loop(env, &loop) != napi_ok || flags == -1 ||
        fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1 || uv_poll_init(loop, &s->poll, fd) != 0) {
      fuse_session_remove_chan(s->ch);
      fuse_session_destroy(s->se);
      fuse_unmount(s->mountpoint, s->ch);
      s->thread_done = 0;
      napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
      napi_throw_error(env, "EMOUNT", "cannot poll the FUSE device");
      return NULL;   /* s is leaked deliberately: the aborted tsfn still references it */
    }
    s->poll.data = s;
    s->env_for_poll = env;
    uv_poll_start(&s->poll, UV_READABLE, on_readable);
    napi_value handle;
    napi_create_external(env, s, NULL, NULL, &handle);
    return handle;
  }

  /* The session thread and libfuse's workers (which inherit its mask) must not take the
   * process's signals away from the JS thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = pthread_create(&s->thread, NULL, session_thread, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);

  if (err != 0) {
    fuse_session_remove_chan(s->ch);
    fuse_session_destroy(s->se);
    fuse_unmount(s->mountpoint, s->ch);
    s->thread_done = 0;   /* finalize must not join */
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
    napi_throw_error(env, "EMOUNT", "pthread_create failed");
    return NULL;   /* s is leaked deliberately: the aborted tsfn still references it */
  }

  napi_value handle;
  napi_create_external(env, s, NULL, NULL, &handle);
  return handle;
}

/* ---------------------------------------------------------------------------------------
 * Module
 * ------------------------------------------------------------------------------------ */

static void set_u32 (napi_env env, napi_value obj, const char *key, uint32_t n) {
  napi_set_named_property(env, obj, key, js_u32(env, n));
}

static napi_value init_module (napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
    { "mount", NULL, js_mount, NULL, NULL, NULL, napi_default, NULL },
    { "signal", NULL, js_signal, NULL, NULL, NULL, napi_default, NULL },
    { "invalidate", NULL, js_invalidate, NULL, NULL, NULL, napi_default, NULL },
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
  set_u32(env, exports, "fuseVersion", (uint32_t) fuse_version());
  set_u32(env, exports, "bindingVersion", 2);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
