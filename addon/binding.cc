// binding.cc -- the node-addon-api binding for the iomux core.
//
// It converts arguments, owns the embedding in Node's libuv loop, and hands
// each batch of event records to JavaScript in one call. It holds no socket
// state of its own: ids, records and the slab are the core's.
//
// Embedding (the default): the core's fd (its epoll fd or io_uring ring) is
// ONE uv_poll_t on Node's loop; a uv_timer_t is armed to the core's nearest
// deadline; a uv_prepare_t runs an iteration when the core has work that needs
// no wait (sockets left readable by a cap, uncorked queues, io_uring
// registrations and removals not yet submitted, which the kernel does not see
// until then). Each wake harvests with a zero-timeout iteration.
//
// Standalone (loop.run()): libuv's own backend fd joins the core's wait, and
// the core's blocking wait happens in the prepare phase; control goes back to
// libuv only when it has something to do (its fd is readable or a timer is
// due), so network traffic costs one wait per batch.

#define NAPI_VERSION 8
#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define IOMUX_HAVE_MALLINFO2 1
#endif
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <string>
#include <vector>

extern "C" {
#include "iomux.h"
}

// The shared-memory cache's class (addon/shm_binding.cc).
Napi::Function DefineSharedCacheHandle(Napi::Env env);
// The sync region's create/attach (addon/shm_binding.cc).
Napi::Object DefineSyncRegion(Napi::Env env);

namespace {

// What must outlive the JavaScript side until libuv has closed the handles.
struct Native {
  iomux_loop *loop = nullptr;
  uv_loop_t *uv = nullptr;
  uv_poll_t poll;
  uv_timer_t timer;
  uv_prepare_t prepare;
  uv_idle_t idle;  // keeps libuv's own poll from blocking (standalone, busy poll)
  int open_handles = 0;
  napi_env env = nullptr;
  napi_ref dispatch = nullptr;
  napi_ref records = nullptr;
  napi_ref slab = nullptr;
  napi_async_context async_context = nullptr;
  napi_async_cleanup_hook_handle cleanup = nullptr;
  bool ref = false;
  bool standalone = false;
  bool closing = false;
  bool in_iteration = false;
  uint64_t busy_poll_ns = 0;  // loop.busyPoll, 0: sleep at once
  uint64_t busy_windows = 0;  // busy-poll windows opened ...
  uint64_t busy_caught = 0;   // ... and those that caught a batch
  char scratch[64 * 1024];  // writeString's encoding buffer
};

void ArmTimer(Native *n);

size_t OnFlush(void *data, const int32_t *, size_t count) {
  Native *n = static_cast<Native *>(data);
  if (n->closing || !n->dispatch) return 0;
  napi_env env = n->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  // Node's timers read libuv's cached clock: after a long wait of our own it
  // must be current, or a setTimeout() made now would fire early.
  if (n->standalone) uv_update_time(n->uv);
  napi_value fn, recv, arg, result;
  napi_get_reference_value(env, n->dispatch, &fn);
  napi_get_global(env, &recv);  // MakeCallback needs an object receiver
  napi_create_uint32(env, static_cast<uint32_t>(count), &arg);
  // A callback scope: promise jobs and process.nextTick run after the batch.
  napi_status st =
      napi_make_callback(env, n->async_context, recv, fn, 1, &arg, &result);
  size_t pos = 0;
  if (st == napi_ok) {
    uint32_t v;
    if (napi_get_value_uint32(env, result, &v) == napi_ok) pos = v;
  } else {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);  // to 'uncaughtException'
    }
  }
  napi_close_handle_scope(env, scope);
  return pos;
}

// Returns how many records the iteration delivered (0 when it did not run).
int RunIteration(Native *n, int timeout_ms) {
  if (n->closing || n->in_iteration) return 0;
  n->in_iteration = true;
  int delivered = iomux_loop_run_once(n->loop, timeout_ms);
  n->in_iteration = false;
  return delivered;
}

void KeepPolling(uv_idle_t *) {}

// Busy polling (loop.busyPoll, off unless asked for): before the thread would
// sleep, poll the core without waiting, for up to busy_poll_ns. A peer that
// answers within that window is served without putting this thread to sleep
// and waking it again, which on a VM costs tens of microseconds of latency
// and of CPU each time; the price is a core kept spinning while the window
// lasts. uv_timeout is how long libuv itself may sleep (-1: no limit, 0:
// not at all, and then there is nothing to save). Returns true when the
// window caught a batch: the caller keeps libuv's next poll from blocking,
// and the next prepare phase spins again.
bool BusyPoll(Native *n, int uv_timeout) {
  if (n->busy_poll_ns == 0 || uv_timeout == 0) return false;
  uint64_t budget = n->busy_poll_ns;
  if (uv_timeout > 0 && static_cast<uint64_t>(uv_timeout) * 1000000 < budget)
    budget = static_cast<uint64_t>(uv_timeout) * 1000000;
  uint64_t end = uv_hrtime() + budget;
  n->busy_windows++;
  do {
    if (RunIteration(n, 0) > 0) {
      n->busy_caught++;
      return true;
    }
    // Standalone: libuv's own fd is in the core's wait; its work comes first.
    if (iomux_loop_foreign_ready(n->loop)) return true;
  } while (!n->closing && uv_hrtime() < end);
  return false;
}

void ArmTimer(Native *n) {
  if (n->closing || n->standalone) return;
  int64_t t = iomux_loop_next_timeout(n->loop);
  if (t < 0)
    uv_timer_stop(&n->timer);
  else
    uv_timer_start(&n->timer, [](uv_timer_t *h) {
      Native *n = static_cast<Native *>(h->data);
      RunIteration(n, 0);
      ArmTimer(n);
    }, static_cast<uint64_t>(t), 0);
}

void OnPoll(uv_poll_t *h, int status, int) {
  Native *n = static_cast<Native *>(h->data);
  if (status < 0) return;
  RunIteration(n, 0);
  ArmTimer(n);
}

// The standalone wait: block in the core, with libuv's fd in the same wait,
// until libuv has work of its own. libuv then runs one iteration whose poll
// must not block (our fd is not in its set): the idle handle sees to that,
// and the next prepare phase brings us back here.
void StandaloneWait(Native *n) {
  uv_idle_stop(&n->idle);
  for (;;) {
    int uv_timeout = uv_backend_timeout(n->uv);
    if (uv_timeout == 0) {
      RunIteration(n, 0);
      break;
    }
    uint64_t start = uv_hrtime();
    if (!BusyPoll(n, uv_timeout)) RunIteration(n, uv_timeout);
    if (n->closing || iomux_loop_foreign_ready(n->loop)) break;
    if (!n->ref && iomux_loop_next_timeout(n->loop) < 0) {
      // Nothing of ours keeps the process alive: let libuv decide.
      break;
    }
    if (uv_timeout > 0 &&
        uv_hrtime() - start >= static_cast<uint64_t>(uv_timeout) * 1000000)
      break;
  }
  uv_update_time(n->uv);
  if (!n->closing) uv_idle_start(&n->idle, KeepPolling);
}

void OnPrepare(uv_prepare_t *h) {
  Native *n = static_cast<Native *>(h->data);
  if (n->standalone) {
    StandaloneWait(n);
    return;
  }
  if (iomux_loop_next_timeout(n->loop) == 0) RunIteration(n, 0);
  if (n->busy_poll_ns) {
    uv_idle_stop(&n->idle);
    if (BusyPoll(n, uv_backend_timeout(n->uv)) && !n->closing)
      uv_idle_start(&n->idle, KeepPolling);
  }
  ArmTimer(n);
}

void ApplyRef(Native *n) {
  uv_handle_t *keep = n->standalone ? reinterpret_cast<uv_handle_t *>(&n->prepare)
                                    : reinterpret_cast<uv_handle_t *>(&n->poll);
  if (n->ref)
    uv_ref(keep);
  else
    uv_unref(keep);
}

void OnHandleClosed(uv_handle_t *h) {
  Native *n = static_cast<Native *>(h->data);
  if (--n->open_handles > 0) return;
  iomux_loop_free(n->loop);
  napi_async_cleanup_hook_handle hook = n->cleanup;
  delete n;
  napi_remove_async_cleanup_hook(hook);
}

// Worker teardown (and process exit): close the handles, then free the core,
// which closes every socket it still has.
void OnEnvCleanup(napi_async_cleanup_hook_handle, void *data) {
  Native *n = static_cast<Native *>(data);
  n->closing = true;
  napi_env env = n->env;
  if (n->dispatch) napi_delete_reference(env, n->dispatch);
  if (n->records) napi_delete_reference(env, n->records);
  if (n->slab) napi_delete_reference(env, n->slab);
  if (n->async_context) napi_async_destroy(env, n->async_context);
  n->dispatch = n->records = n->slab = nullptr;
  n->async_context = nullptr;
  uv_close(reinterpret_cast<uv_handle_t *>(&n->poll), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t *>(&n->timer), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t *>(&n->prepare), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t *>(&n->idle), OnHandleClosed);
}

// ---- argument helpers ------------------------------------------------------

bool SockaddrFrom(const std::string &host, int port, int family,
                  sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  if (family == 6) {
    auto *in6 = reinterpret_cast<sockaddr_in6 *>(ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    std::string addr = host;
    size_t pct = addr.find('%');  // zone ids: fe80::1%eth0
    if (pct != std::string::npos) {
      in6->sin6_scope_id = if_nametoindex(addr.substr(pct + 1).c_str());
      addr = addr.substr(0, pct);
    }
    *len = sizeof *in6;
    return inet_pton(AF_INET6, addr.c_str(), &in6->sin6_addr) == 1;
  }
  auto *in = reinterpret_cast<sockaddr_in *>(ss);
  in->sin_family = AF_INET;
  in->sin_port = htons(static_cast<uint16_t>(port));
  *len = sizeof *in;
  return inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1;
}

bool SockaddrUnix(const std::string &path, sockaddr_storage *ss,
                  socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  auto *un = reinterpret_cast<sockaddr_un *>(ss);
  if (path.empty() || path.size() >= sizeof un->sun_path) return false;
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

Napi::Value AddressTriple(Napi::Env env, const sockaddr_storage &ss, socklen_t len) {
  char buf[INET6_ADDRSTRLEN] = "";
  std::string text;
  int port = 0, family = IOMUX_AF_UNIX;
  if (ss.ss_family == AF_INET) {
    auto *in = reinterpret_cast<const sockaddr_in *>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    port = ntohs(in->sin_port);
    family = IOMUX_AF_INET;
  } else if (ss.ss_family == AF_INET6) {
    auto *in6 = reinterpret_cast<const sockaddr_in6 *>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    port = ntohs(in6->sin6_port);
    family = IOMUX_AF_INET6;
  } else if (ss.ss_family == AF_UNIX) {
    // An unnamed socket's address is the family alone: no path bytes.
    auto *un = reinterpret_cast<const sockaddr_un *>(&ss);
    size_t max = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    if (max > sizeof un->sun_path) max = sizeof un->sun_path;
    text.assign(un->sun_path, strnlen(un->sun_path, max));
  }
  if (ss.ss_family != AF_UNIX) text = buf;
  napi_value a = nullptr, v;
  napi_create_array_with_length(env, 3, &a);
  napi_create_string_utf8(env, text.data(), text.size(), &v);
  napi_set_element(env, a, 0, v);
  napi_create_int32(env, port, &v);
  napi_set_element(env, a, 1, v);
  napi_create_int32(env, family, &v);
  napi_set_element(env, a, 2, v);
  return Napi::Value(env, a);
}

class Binding : public Napi::Addon<Binding> {
 public:
  Binding(Napi::Env env, Napi::Object exports) {
    n_ = new Native();
    n_->env = env;
    int err = 0;
    // IOMUX_BACKEND=epoll|io_uring|kqueue forces a backend; one that this
    // system cannot have is an error, never a silent fallback.
    iomux_config cfg{};
    const char *forced = getenv("IOMUX_BACKEND");
    if (forced && *forced) cfg.backend = forced;
    // IOMUX_BATCH=0: every read and write a syscall of its own (to measure
    // what batching them saves).
    const char *batch = getenv("IOMUX_BATCH");
    cfg.no_batch = batch && strcmp(batch, "0") == 0;
#ifdef IOMUX_KQUEUE_EMULATION
    // The test build (test/kqemu/binding.gyp, loaded by lib/binding.ts for
    // IOMUX_BACKEND=kqueue-emulated): its kqueue is the emulated one.
    if (forced && strcmp(forced, "kqueue-emulated") == 0) cfg.backend = "kqueue";
#endif
    n_->loop = iomux_loop_new(&cfg, &err);
    if (!n_->loop) {
      delete n_;
      n_ = nullptr;
      std::string msg = forced && *forced
          ? std::string("iomux: IOMUX_BACKEND=") + forced + " is not available here: "
          : std::string("iomux: no event backend could be created: ");
      msg += strerror(-err);
      Napi::Error e = Napi::Error::New(env, msg);
      e.Set("code", Napi::String::New(env, "ERR_IOMUX_BACKEND"));
      e.Set("errno", Napi::Number::New(env, err));
      e.ThrowAsJavaScriptException();
      return;
    }
    napi_get_uv_event_loop(env, &n_->uv);
    n_->poll.data = n_->timer.data = n_->prepare.data = n_->idle.data = n_;
    uv_poll_init(n_->uv, &n_->poll, iomux_loop_fd(n_->loop));
    uv_timer_init(n_->uv, &n_->timer);
    uv_prepare_init(n_->uv, &n_->prepare);
    uv_idle_init(n_->uv, &n_->idle);
    n_->open_handles = 4;
    uv_unref(reinterpret_cast<uv_handle_t *>(&n_->idle));
    uv_unref(reinterpret_cast<uv_handle_t *>(&n_->timer));
    uv_unref(reinterpret_cast<uv_handle_t *>(&n_->prepare));
    uv_unref(reinterpret_cast<uv_handle_t *>(&n_->poll));
    uv_poll_start(&n_->poll, UV_READABLE, OnPoll);
    uv_prepare_start(&n_->prepare, OnPrepare);
    iomux_loop_set_flush(n_->loop, OnFlush, n_);
    napi_add_async_cleanup_hook(env, OnEnvCleanup, n_, &n_->cleanup);

    DefineAddon(exports, {
      InstanceMethod("init", &Binding::Setup),
      InstanceMethod("setSlab", &Binding::SetSlab),
      InstanceMethod("write", &Binding::Write),
      InstanceMethod("writev", &Binding::Writev),
      InstanceMethod("writeString", &Binding::WriteString),
      InstanceMethod("queued", &Binding::Queued),
      InstanceMethod("shutdown", &Binding::Shutdown),
      InstanceMethod("close", &Binding::Close),
      InstanceMethod("setReading", &Binding::SetReading),
      InstanceMethod("cork", &Binding::Cork),
      InstanceMethod("setTimeout", &Binding::SetTimeout),
      InstanceMethod("setNoDelay", &Binding::SetNoDelay),
      InstanceMethod("setKeepAlive", &Binding::SetKeepAlive),
      InstanceMethod("setBufferSize", &Binding::SetBufferSize),
      InstanceMethod("getBufferSize", &Binding::GetBufferSize),
      InstanceMethod("listen", &Binding::Listen),
      InstanceMethod("listenUnix", &Binding::ListenUnix),
      InstanceMethod("listenFd", &Binding::ListenFd),
      InstanceMethod("listenSocket", &Binding::ListenSocket),
      InstanceMethod("listenSocketUnix", &Binding::ListenSocketUnix),
      InstanceMethod("adopt", &Binding::Adopt),
      InstanceMethod("socketpair", &Binding::Socketpair),
      InstanceMethod("peerCred", &Binding::PeerCred),
      InstanceMethod("fdLocalAddress", &Binding::FdLocalAddress),
      InstanceMethod("connect", &Binding::Connect),
      InstanceMethod("connectUnix", &Binding::ConnectUnix),
      InstanceMethod("connectFrom", &Binding::ConnectFrom),
      InstanceMethod("reset", &Binding::Reset),
      InstanceMethod("localAddress", &Binding::LocalAddress),
      InstanceMethod("ntop6", &Binding::Ntop6),
      InstanceMethod("timerStart", &Binding::TimerStart),
      InstanceMethod("timerRestart", &Binding::TimerRestart),
      InstanceMethod("timerStop", &Binding::TimerStop),
      InstanceMethod("setRef", &Binding::SetRef),
      InstanceMethod("runStandalone", &Binding::RunStandalone),
      InstanceMethod("setBusyPoll", &Binding::SetBusyPoll),
      InstanceMethod("stats", &Binding::Stats),
      InstanceMethod("backend", &Binding::Backend),
      InstanceMethod("batching", &Binding::Batching),
      InstanceMethod("memory", &Binding::Memory),
      InstanceMethod("forward", &Binding::Forward),
      InstanceValue("SharedCacheHandle", DefineSharedCacheHandle(env), napi_enumerable),
      InstanceValue("syncRegion", DefineSyncRegion(env), napi_enumerable),
    });
  }

  // The core outlives this object until libuv closes the handles.
  ~Binding() { n_ = nullptr; }

 private:
  Native *n_;

  iomux_loop *L() const { return n_->loop; }

  // Argument and result helpers on raw N-API. node-addon-api built without
  // C++ exceptions turns a failed call into a fatal error, and calls do fail
  // while a worker's environment is being terminated in the middle of a
  // batch: these helpers fall back to a neutral value instead.
  static int32_t I32(const Napi::CallbackInfo &info, size_t i) {
    int32_t v = 0;
    napi_get_value_int32(info.Env(), info[i], &v);
    return v;
  }
  static uint32_t U32(const Napi::CallbackInfo &info, size_t i) {
    uint32_t v = 0;
    napi_get_value_uint32(info.Env(), info[i], &v);
    return v;
  }
  static double F64(const Napi::CallbackInfo &info, size_t i) {
    double v = 0;
    napi_get_value_double(info.Env(), info[i], &v);
    return v;
  }
  static bool Bool(const Napi::CallbackInfo &info, size_t i) {
    bool v = false;
    napi_get_value_bool(info.Env(), info[i], &v);
    return v;
  }
  static std::string Str(const Napi::CallbackInfo &info, size_t i) {
    char buf[256];
    size_t len = 0;
    if (napi_get_value_string_utf8(info.Env(), info[i], buf, sizeof buf, &len) != napi_ok) return {};
    return std::string(buf, len);
  }
  // The bytes of a Uint8Array (the JavaScript side passes nothing else).
  static bool Bytes(napi_env env, napi_value v, void **data, size_t *len) {
    napi_typedarray_type type;
    napi_value ab;
    size_t off;
    return napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) == napi_ok &&
           type == napi_uint8_array;
  }
  static Napi::Value Num(Napi::Env env, double v) {
    napi_value r = nullptr;
    napi_create_double(env, v, &r);
    return Napi::Value(env, r);
  }

  // init(records: Int32Array, slab: ArrayBuffer, dispatch: (count) => pos)
  Napi::Value Setup(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    napi_typedarray_type type;
    size_t length = 0, off;
    void *data = nullptr;
    napi_value ab;
    if (napi_get_typedarray_info(env, info[0], &type, &length, &data, &ab, &off) != napi_ok ||
        type != napi_int32_array) {
      napi_throw_type_error(env, nullptr, "init: records must be an Int32Array");
      return info.Env().Undefined();
    }
    if (n_->dispatch) napi_delete_reference(env, n_->dispatch);
    if (n_->records) napi_delete_reference(env, n_->records);
    napi_create_reference(env, info[2], 1, &n_->dispatch);
    napi_create_reference(env, info[0], 1, &n_->records);
    iomux_loop_set_records(L(), static_cast<int32_t *>(data), length);
    SetSlabFrom(env, info[1], 0);
    napi_value name, resource;
    napi_create_string_utf8(env, "iomux", NAPI_AUTO_LENGTH, &name);
    napi_create_object(env, &resource);
    napi_async_init(env, resource, name, &n_->async_context);
    return info.Env().Undefined();
  }

  void SetSlabFrom(napi_env env, napi_value v, size_t pos) {
    void *data = nullptr;
    size_t len = 0;
    if (napi_get_arraybuffer_info(env, v, &data, &len) != napi_ok) return;
    if (n_->slab) napi_delete_reference(env, n_->slab);
    napi_create_reference(env, v, 1, &n_->slab);
    iomux_loop_set_slab(L(), static_cast<uint8_t *>(data), len, pos);
  }

  Napi::Value SetSlab(const Napi::CallbackInfo &info) {
    SetSlabFrom(info.Env(), info[0], U32(info, 1));
    return info.Env().Undefined();
  }

  // write(id, Uint8Array, notify) -> bytes queued, or -errno. The JavaScript
  // side passes only Uint8Arrays, so napi_get_buffer_info (no type lookup,
  // which showed in the request/response profile) reads it directly.
  Napi::Value Write(const Napi::CallbackInfo &info) {
    void *data = nullptr;
    size_t len = 0;
    if (napi_get_buffer_info(info.Env(), info[1], &data, &len) != napi_ok)
      return Num(info.Env(), -EINVAL);
    return Num(info.Env(), static_cast<double>(
        iomux_write(L(), I32(info, 0), data, len, Bool(info, 2))));
  }

  // writeString(id, string, latin1, notify) -> bytes queued, or -errno.
  // Encodes into a scratch buffer the core copies from (it queues only what
  // the kernel refuses), so a text response costs no Buffer. The caller keeps
  // strings under a third of the scratch size (UTF-8 takes at most 3 bytes per
  // UTF-16 unit); -EMSGSIZE tells it to fall back anyway.
  Napi::Value WriteString(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    char *buf = n_->scratch;
    size_t len = 0;
    napi_status st = Bool(info, 2)
        ? napi_get_value_string_latin1(env, info[1], buf, sizeof n_->scratch, &len)
        : napi_get_value_string_utf8(env, info[1], buf, sizeof n_->scratch, &len);
    if (st != napi_ok) return Num(env, -EINVAL);
    if (len + 1 >= sizeof n_->scratch) return Num(env, -EMSGSIZE);
    return Num(env, static_cast<double>(
        iomux_write(L(), I32(info, 0), buf, len, Bool(info, 3))));
  }

  // writev(id, notify, ...chunks: Uint8Array): the pieces come as arguments,
  // which are read straight off the call's frame; reading them as elements
  // of an array goes through V8's generic property lookup, once per piece.
  Napi::Value Writev(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    size_t cnt = info.Length() < 2 ? 0 : info.Length() - 2;
    std::vector<iovec> iov(cnt);
    for (size_t i = 0; i < cnt; i++)
      if (!Bytes(env, info[i + 2], &iov[i].iov_base, &iov[i].iov_len)) return Num(env, -EINVAL);
    return Num(env, static_cast<double>(
        iomux_writev(L(), I32(info, 0), iov.data(), static_cast<int>(cnt), Bool(info, 1))));
  }

  Napi::Value Queued(const Napi::CallbackInfo &info) {
    return Num(info.Env(), static_cast<double>(iomux_queued(L(), I32(info, 0))));
  }

  Napi::Value Shutdown(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_shutdown(L(), I32(info, 0)));
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_close(L(), I32(info, 0)));
  }

  Napi::Value SetReading(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_set_reading(L(), I32(info, 0), Bool(info, 1)));
  }

  Napi::Value Cork(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_cork(L(), I32(info, 0), Bool(info, 1)));
  }

  Napi::Value SetTimeout(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_set_timeout(L(), I32(info, 0), U32(info, 1)));
  }

  Napi::Value SetNoDelay(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_set_nodelay(L(), I32(info, 0), Bool(info, 1)));
  }

  Napi::Value SetKeepAlive(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_set_keepalive(L(), I32(info, 0), Bool(info, 1), U32(info, 2)));
  }

  // setBufferSize(id, send, bytes) -> 0 or -errno; getBufferSize(id, send) -> bytes or -errno
  Napi::Value SetBufferSize(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_set_bufsize(L(), I32(info, 0), Bool(info, 1), I32(info, 2)));
  }

  Napi::Value GetBufferSize(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_get_bufsize(L(), I32(info, 0), Bool(info, 1)));
  }

  // listen(host, port, family 4|6, backlog, flags) -> id or -errno
  Napi::Value Listen(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len;
    if (!SockaddrFrom(Str(info, 0), I32(info, 1), I32(info, 2), &ss, &len))
      return Num(info.Env(), -EINVAL);
    return Num(info.Env(), iomux_listen(L(), reinterpret_cast<sockaddr *>(&ss), len,
                                        I32(info, 3), U32(info, 4)));
  }

  Napi::Value ListenUnix(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len;
    if (!SockaddrUnix(Str(info, 0), &ss, &len)) return Num(info.Env(), -ENAMETOOLONG);
    return Num(info.Env(), iomux_listen(L(), reinterpret_cast<sockaddr *>(&ss), len,
                                        I32(info, 1), 0));
  }

  // listenSocket(host, port, family, backlog, flags) -> fd or -errno: a
  // listening socket no loop watches (to hand down to other processes).
  Napi::Value ListenSocket(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len;
    if (!SockaddrFrom(Str(info, 0), I32(info, 1), I32(info, 2), &ss, &len))
      return Num(info.Env(), -EINVAL);
    return Num(info.Env(), iomux_listen_socket(L(), reinterpret_cast<sockaddr *>(&ss), len,
                                               I32(info, 3), U32(info, 4)));
  }

  Napi::Value ListenSocketUnix(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len;
    if (!SockaddrUnix(Str(info, 0), &ss, &len)) return Num(info.Env(), -ENAMETOOLONG);
    return Num(info.Env(), iomux_listen_socket(L(), reinterpret_cast<sockaddr *>(&ss), len,
                                               I32(info, 1), 0));
  }

  // listenFd(fd) -> id or -errno: adopts a listening socket.
  Napi::Value ListenFd(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_listen_fd(L(), I32(info, 0), 0));
  }

  // socketpair() -> [fd, fd] or -errno
  Napi::Value Socketpair(const Napi::CallbackInfo &info) {
    int fds[2];
    int rc = iomux_socketpair(L(), fds);
    if (rc < 0) return Num(info.Env(), rc);
    Napi::Array a = Napi::Array::New(info.Env(), 2);
    a.Set(0u, Napi::Number::New(info.Env(), fds[0]));
    a.Set(1u, Napi::Number::New(info.Env(), fds[1]));
    return a;
  }

  // peerCred(id) -> [pid, uid, gid] or -errno
  Napi::Value PeerCred(const Napi::CallbackInfo &info) {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    int rc = iomux_peer_cred(L(), I32(info, 0), &uid, &gid, &pid);
    if (rc < 0) return Num(info.Env(), rc);
    Napi::Array a = Napi::Array::New(info.Env(), 3);
    a.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(pid)));
    a.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(uid)));
    a.Set(2u, Napi::Number::New(info.Env(), static_cast<double>(gid)));
    return a;
  }

  // adopt(fd) -> id or -errno: adopts a connected stream socket.
  Napi::Value Adopt(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_adopt(L(), I32(info, 0)));
  }

  // connect(host, port, family) -> id or -errno
  Napi::Value Connect(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len;
    if (!SockaddrFrom(Str(info, 0), I32(info, 1), I32(info, 2), &ss, &len))
      return Num(info.Env(), -EINVAL);
    return Num(info.Env(), iomux_connect(L(), reinterpret_cast<sockaddr *>(&ss), len));
  }

  // connectFrom(host, port, family, localHost, localPort) -> id or -errno
  Napi::Value ConnectFrom(const Napi::CallbackInfo &info) {
    sockaddr_storage ss, local;
    socklen_t len, local_len;
    int family = I32(info, 2);
    if (!SockaddrFrom(Str(info, 0), I32(info, 1), family, &ss, &len))
      return Num(info.Env(), -EINVAL);
    std::string lh = Str(info, 3);
    if (lh.empty()) lh = family == 6 ? "::" : "0.0.0.0";
    if (!SockaddrFrom(lh, I32(info, 4), family, &local, &local_len))
      return Num(info.Env(), -EAFNOSUPPORT);
    return Num(info.Env(), iomux_connect_from(L(), reinterpret_cast<sockaddr *>(&ss), len,
                                              reinterpret_cast<sockaddr *>(&local), local_len));
  }

  Napi::Value Reset(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_reset(L(), I32(info, 0)));
  }

  Napi::Value ConnectUnix(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len;
    if (!SockaddrUnix(Str(info, 0), &ss, &len)) return Num(info.Env(), -ENAMETOOLONG);
    return Num(info.Env(), iomux_connect(L(), reinterpret_cast<sockaddr *>(&ss), len));
  }

  // localAddress(id) -> [address, port, family] or -errno
  Napi::Value FdLocalAddress(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len = 0;
    int rc = iomux_fd_local_address(L(), I32(info, 0), &ss, &len);
    if (rc < 0) return Num(info.Env(), rc);
    return AddressTriple(info.Env(), ss, len);
  }

  Napi::Value LocalAddress(const Napi::CallbackInfo &info) {
    sockaddr_storage ss;
    socklen_t len = 0;
    int rc = iomux_local_address(L(), I32(info, 0), &ss, &len);
    if (rc < 0) return Num(info.Env(), rc);
    return AddressTriple(info.Env(), ss, len);
  }

  // ntop6(w0, w1, w2, w3): the text of an IPv6 address carried in a record.
  Napi::Value Ntop6(const Napi::CallbackInfo &info) {
    int32_t w[4];
    for (size_t i = 0; i < 4; i++) w[i] = I32(info, i);
    char buf[INET6_ADDRSTRLEN] = "";
    inet_ntop(AF_INET6, w, buf, sizeof buf);
    napi_value r = nullptr;
    napi_create_string_latin1(info.Env(), buf, NAPI_AUTO_LENGTH, &r);
    return Napi::Value(info.Env(), r);
  }

  // timerStart(ms, out: Int32Array) -> id (out[0] = generation) or -errno
  Napi::Value TimerStart(const Napi::CallbackInfo &info) {
    uint32_t gen = 0;
    int id = iomux_timer_start(L(), static_cast<uint64_t>(F64(info, 0)), &gen);
    napi_typedarray_type type;
    size_t n = 0, off;
    void *data = nullptr;
    napi_value ab;
    if (napi_get_typedarray_info(info.Env(), info[1], &type, &n, &data, &ab, &off) == napi_ok &&
        type == napi_int32_array && n > 0)
      static_cast<int32_t *>(data)[0] = static_cast<int32_t>(gen);
    return Num(info.Env(), id);
  }

  Napi::Value TimerRestart(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_timer_restart(L(), I32(info, 0), U32(info, 1),
                                               static_cast<uint64_t>(F64(info, 2))));
  }

  Napi::Value TimerStop(const Napi::CallbackInfo &info) {
    return Num(info.Env(), iomux_timer_stop(L(), I32(info, 0), U32(info, 1)));
  }

  // setRef(bool): whether iomux keeps the process alive.
  Napi::Value SetRef(const Napi::CallbackInfo &info) {
    n_->ref = Bool(info, 0);
    ApplyRef(n_);
    return info.Env().Undefined();
  }

  // Microseconds of busy polling before a sleep (validated by lib/loop.ts).
  Napi::Value SetBusyPoll(const Napi::CallbackInfo &info) {
    n_->busy_poll_ns = static_cast<uint64_t>(U32(info, 0)) * 1000;
    if (n_->busy_poll_ns == 0 && !n_->standalone) uv_idle_stop(&n_->idle);
    return info.Env().Undefined();
  }

  Napi::Value RunStandalone(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (n_->standalone) return env.Undefined();
    // Our fd leaves libuv's epoll set first (uv_poll_stop removes it at
    // once): adding libuv's fd to ours while ours is in libuv's would make a
    // cycle, which epoll_ctl refuses with ELOOP.
    uv_poll_stop(&n_->poll);
    int rc = iomux_loop_watch_foreign(L(), uv_backend_fd(n_->uv));
    if (rc < 0) {
      uv_poll_start(&n_->poll, UV_READABLE, OnPoll);
      return Num(env, rc);
    }
    uv_timer_stop(&n_->timer);
    uv_unref(reinterpret_cast<uv_handle_t *>(&n_->poll));
    n_->standalone = true;
    ApplyRef(n_);
    return Num(env, 0);
  }

  Napi::Value Stats(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    const iomux_stats *s = iomux_loop_stats(L());
    napi_value o = nullptr, v;
    napi_create_object(env, &o);
#define IOMUX_STAT_SET(name)                                   \
    napi_create_double(env, static_cast<double>(s->name), &v); \
    napi_set_named_property(env, o, #name, v);
    IOMUX_STATS(IOMUX_STAT_SET)
#undef IOMUX_STAT_SET
    napi_create_double(env, static_cast<double>(n_->busy_windows), &v);
    napi_set_named_property(env, o, "busy_windows", v);
    napi_create_double(env, static_cast<double>(n_->busy_caught), &v);
    napi_set_named_property(env, o, "busy_caught", v);
    return Napi::Value(env, o);
  }

  // forward(a, b, idleMs, highWater, flags) -> 0 or -errno. The outcome
  // comes later as a FORWARD_END record.
  Napi::Value Forward(const Napi::CallbackInfo &info) {
    iomux_forward_opts o{};
    o.idle_ms = U32(info, 2);
    o.high_water = U32(info, 3);
    o.flags = U32(info, 4);
    return Num(info.Env(), iomux_forward(L(), I32(info, 0), I32(info, 1), &o));
  }

  Napi::Value Batching(const Napi::CallbackInfo &info) {
    napi_value r = nullptr;
    napi_get_boolean(info.Env(), iomux_loop_batching(L()) != 0, &r);
    return Napi::Value(info.Env(), r);
  }

  // [bytes the core holds for its sockets, bytes in its buffer pools, bytes
  // the process has in use from malloc (glibc's mallinfo2; -1 elsewhere)]:
  // for memory tests.
  Napi::Value Memory(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    double in_use = -1;
#ifdef IOMUX_HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    in_use = static_cast<double>(mi.uordblks + mi.hblkhd);
#endif
    iomux_memory m;
    iomux_loop_memory(L(), &m);
    napi_value arr = nullptr, v;
    napi_create_array_with_length(env, 3, &arr);
    napi_create_double(env, static_cast<double>(m.sockets), &v);
    napi_set_element(env, arr, 0, v);
    napi_create_double(env, static_cast<double>(m.pooled), &v);
    napi_set_element(env, arr, 1, v);
    napi_create_double(env, in_use, &v);
    napi_set_element(env, arr, 2, v);
    return Napi::Value(env, arr);
  }

  Napi::Value Backend(const Napi::CallbackInfo &info) {
    napi_value r = nullptr;
    napi_create_string_latin1(info.Env(), iomux_loop_backend(L()), NAPI_AUTO_LENGTH, &r);
    return Napi::Value(info.Env(), r);
  }
};

}  // namespace

NODE_API_ADDON(Binding)
