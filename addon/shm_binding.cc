// shm_binding.cc -- the binding of the shared-memory cache (deps/iomux/src/shm.c).
//
// One SharedCacheHandle per mapping. Keys and small values travel through
// an ArrayBuffer that the JavaScript side owns and hands over once (setIo):
// the key's bytes at 0, a Float64Array of results at KEY_MAX, values after
// it. Each call passes only lengths and numbers, returns 0 or -errno, and
// leaves lengths, versions and TTLs in the result words. No pointer into the
// shared region ever reaches JavaScript: reads copy into the io buffer or
// into a Uint8Array the caller passes.

#define NAPI_VERSION 8
#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "iomux_shm.h"
#include "iomux_sync.h"
}

namespace {

constexpr size_t kKeyMax = IOMUX_SHM_MAX_KEY;
constexpr size_t kMetaWords = 8;
constexpr size_t kValueOff = kKeyMax + kMetaWords * 8;

double Dbl(const Napi::CallbackInfo &info, size_t i) {
  double v = 0;
  napi_get_value_double(info.Env(), info[i], &v);
  return v;
}

int32_t Int(const Napi::CallbackInfo &info, size_t i) {
  int32_t v = 0;
  napi_get_value_int32(info.Env(), info[i], &v);
  return v;
}

bool Bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  void *p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, len, &p, &ab, &off) != napi_ok || type != napi_uint8_array)
    return false;
  *data = static_cast<uint8_t *>(p);
  return true;
}

Napi::Value Num(napi_env env, double v) {
  napi_value r = nullptr;
  napi_create_double(env, v, &r);
  return Napi::Value(env, r);
}

// TTL from JavaScript: ms >= 0, or -1 for the region's default.
uint64_t Ttl(double v) { return v < 0 ? UINT64_MAX : static_cast<uint64_t>(v); }

void ThrowShm(napi_env env, int rc, const char *msg) {
  Napi::Error e = Napi::Error::New(env, std::string("SharedCache: ") + msg);
  e.Set("code", Napi::String::New(env, rc == -EACCES ? "EACCES" : "ERR_IOMUX_SHM"));
  e.Set("errno", Napi::Number::New(env, rc));
  e.ThrowAsJavaScriptException();
}

class SharedCacheHandle : public Napi::ObjectWrap<SharedCacheHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SharedCacheHandle", {
      StaticMethod("fdNew", &SharedCacheHandle::FdNew),
      StaticMethod("unlink", &SharedCacheHandle::Unlink),
      StaticMethod("closeFd", &SharedCacheHandle::CloseFd),
      InstanceMethod("setIo", &SharedCacheHandle::SetIo),
      InstanceMethod("get", &SharedCacheHandle::Get),
      InstanceMethod("put", &SharedCacheHandle::Put),
      InstanceMethod("del", &SharedCacheHandle::Del),
      InstanceMethod("incr", &SharedCacheHandle::Incr),
      InstanceMethod("ttl", &SharedCacheHandle::TtlOf),
      InstanceMethod("expire", &SharedCacheHandle::Expire),
      InstanceMethod("clear", &SharedCacheHandle::Clear),
      InstanceMethod("flushExpired", &SharedCacheHandle::FlushExpired),
      InstanceMethod("keys", &SharedCacheHandle::Keys),
      InstanceMethod("stats", &SharedCacheHandle::Stats),
      InstanceMethod("verify", &SharedCacheHandle::Verify),
      InstanceMethod("config", &SharedCacheHandle::Config),
      InstanceMethod("fd", &SharedCacheHandle::Fd),
      InstanceMethod("close", &SharedCacheHandle::Close),
      InstanceMethod("fast", &SharedCacheHandle::Fast),
    });
  }

  // new SharedCacheHandle(fd, create, size, maxEntries, defaultTtl, evict):
  // formats (create) or attaches to the region on fd, keeping a dup of it.
  explicit SharedCacheHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SharedCacheHandle>(info) {
    napi_env env = info.Env();
    int fd = Int(info, 0);
    bool create = false;
    napi_get_value_bool(env, info[1], &create);
    char err[256] = "";
    int rc;
    if (create) {
      iomux_shm_config cfg{};
      cfg.size = static_cast<uint64_t>(Dbl(info, 2));
      cfg.max_entries = static_cast<uint32_t>(Dbl(info, 3));
      cfg.default_ttl = static_cast<uint64_t>(Dbl(info, 4));
      bool evict = true;
      napi_get_value_bool(env, info[5], &evict);
      cfg.evict = evict;
      rc = iomux_shm_create(fd, &cfg, &shm_, err, sizeof err);
    } else {
      rc = iomux_shm_attach(fd, &shm_, err, sizeof err);
    }
    if (rc) ThrowShm(env, rc, err[0] ? err : strerror(-rc));
  }

  ~SharedCacheHandle() override {
    iomux_shm_close(shm_);
    if (io_ref_) napi_delete_reference(Env(), io_ref_);
  }

 private:
  iomux_shm *shm_ = nullptr;
  napi_ref io_ref_ = nullptr;
  uint8_t *io_ = nullptr;
  size_t io_len_ = 0;

  double *Meta() { return reinterpret_cast<double *>(io_ + kKeyMax); }
  uint8_t *ValueArea() { return io_ + kValueOff; }
  size_t ValueCap() { return io_len_ - kValueOff; }

  // Every instance method but setIo needs an open handle and the io buffer.
  bool Ready(const Napi::CallbackInfo &info) {
    if (shm_ && io_) return true;
    Napi::Error::New(info.Env(), "SharedCache is closed").ThrowAsJavaScriptException();
    return false;
  }
  size_t KeyLen(const Napi::CallbackInfo &info, size_t i) {
    double k = Dbl(info, i);
    return k < 0 || k > kKeyMax ? 0 : static_cast<size_t>(k);
  }

  static Napi::Value FdNew(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    bool create = false;
    napi_get_value_bool(env, info[1], &create);
    if (info[0].IsString()) {
      std::string name = info[0].As<Napi::String>().Utf8Value();
      return Num(env, iomux_shm_fd_new(name.c_str(), create));
    }
    return Num(env, iomux_shm_fd_new(nullptr, 1));
  }

  static Napi::Value Unlink(const Napi::CallbackInfo &info) {
    std::string name = info[0].As<Napi::String>().Utf8Value();
    return Num(info.Env(), iomux_shm_unlink(name.c_str()));
  }

  static Napi::Value CloseFd(const Napi::CallbackInfo &info) {
    int fd = Int(info, 0);
    return Num(info.Env(), fd >= 0 && close(fd) == 0 ? 0 : -errno);
  }

  Napi::Value SetIo(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    void *data = nullptr;
    size_t len = 0;
    if (napi_get_arraybuffer_info(env, info[0], &data, &len) != napi_ok || len < kValueOff + 1024) {
      napi_throw_type_error(env, nullptr, "setIo: an ArrayBuffer of at least KEY_MAX + 1088 bytes");
      return info.Env().Undefined();
    }
    if (io_ref_) napi_delete_reference(env, io_ref_);
    napi_create_reference(env, info[0], 1, &io_ref_);
    io_ = static_cast<uint8_t *>(data);
    io_len_ = len;
    return info.Env().Undefined();
  }

  void FillMeta(const iomux_shm_item &it) {
    double *m = Meta();
    m[0] = it.len;
    m[1] = it.type;
    m[2] = static_cast<double>(it.version);
    m[3] = static_cast<double>(it.ttl);
    m[4] = it.stale;
    m[5] = it.evicted;
  }

  // get(klen, stale, target?) -> 0 | -ENOENT | 1 when the value did not fit
  // (meta[0] is its length). Without target the value lands in the io
  // buffer's value area.
  Napi::Value Get(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    if (!Ready(info)) return Num(env, -EBADF);
    bool stale = false;
    napi_get_value_bool(env, info[1], &stale);
    uint8_t *dst = ValueArea();
    size_t cap = ValueCap();
    if (info.Length() > 2 && !info[2].IsUndefined() && !Bytes(env, info[2], &dst, &cap)) return Num(env, -EINVAL);
    iomux_shm_item it;
    int rc = iomux_shm_get(shm_, io_, KeyLen(info, 0), stale, dst, cap, &it);
    FillMeta(it);
    if (rc == 0 && it.len > cap) return Num(env, 1);
    return Num(env, rc);
  }

  // put(mode, klen, value | null, vlen, type, ttl, version): value null means
  // vlen bytes in the io buffer's value area.
  Napi::Value Put(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    if (!Ready(info)) return Num(env, -EBADF);
    uint8_t *val = ValueArea();
    size_t vlen = static_cast<size_t>(Dbl(info, 3));
    if (!info[2].IsNull()) {
      if (!Bytes(env, info[2], &val, &vlen)) return Num(env, -EINVAL);
    } else if (vlen > ValueCap()) {
      return Num(env, -EINVAL);
    }
    iomux_shm_item it;
    int rc = iomux_shm_put(shm_, Int(info, 0), io_, KeyLen(info, 1), val, vlen, static_cast<uint8_t>(Int(info, 4)),
                           Ttl(Dbl(info, 5)), static_cast<uint64_t>(Dbl(info, 6)), &it);
    FillMeta(it);
    return Num(env, rc);
  }

  Napi::Value Del(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    return Num(info.Env(), iomux_shm_delete(shm_, io_, KeyLen(info, 0)));
  }

  // incr(klen, by, initial, ttl) -> rc; meta[6] the new value
  Napi::Value Incr(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    int64_t result = 0;
    iomux_shm_item it;
    int rc = iomux_shm_incr(shm_, io_, KeyLen(info, 0), static_cast<int64_t>(Dbl(info, 1)),
                            static_cast<int64_t>(Dbl(info, 2)), Ttl(Dbl(info, 3)), &result, &it);
    FillMeta(it);
    Meta()[6] = static_cast<double>(result);
    return Num(info.Env(), rc);
  }

  Napi::Value TtlOf(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    int64_t ms = 0;
    int rc = iomux_shm_ttl(shm_, io_, KeyLen(info, 0), &ms);
    Meta()[3] = static_cast<double>(ms);
    return Num(info.Env(), rc);
  }

  Napi::Value Expire(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    return Num(info.Env(), iomux_shm_expire(shm_, io_, KeyLen(info, 0), Ttl(Dbl(info, 1))));
  }

  Napi::Value Clear(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    iomux_shm_clear(shm_);
    return Num(info.Env(), 0);
  }

  Napi::Value FlushExpired(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    return Num(info.Env(), iomux_shm_flush_expired(shm_, static_cast<uint32_t>(Dbl(info, 0))));
  }

  // keys(cursor) -> bytes written to the value area; meta[0] the next cursor
  Napi::Value Keys(const Napi::CallbackInfo &info) {
    if (!Ready(info)) return Num(info.Env(), -EBADF);
    uint32_t cursor = static_cast<uint32_t>(Dbl(info, 0));
    size_t n = iomux_shm_keys(shm_, &cursor, ValueArea(), ValueCap());
    Meta()[0] = cursor;
    return Num(info.Env(), static_cast<double>(n));
  }

  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Ready(info)) return env.Undefined();
    iomux_shm_stats s;
    iomux_shm_stats_get(shm_, &s);
    Napi::Object o = Napi::Object::New(env);
#define SET(js, field) o.Set(js, Napi::Number::New(env, static_cast<double>(s.field)))
    SET("size", size);
    SET("heapSize", heap_size);
    SET("entries", entries);
    SET("maxEntries", max_entries);
    SET("bytesUsed", bytes_used);
    SET("bytesFree", bytes_free);
    SET("hits", hits);
    SET("misses", misses);
    SET("staleHits", stale_hits);
    SET("sets", sets);
    SET("deletes", deletes);
    SET("evictions", evictions);
    SET("expirations", expirations);
    SET("contention", contention);
    SET("readRetries", read_retries);
    SET("lockedReads", locked_reads);
    SET("repairs", repairs);
#undef SET
    return o;
  }

  // verify() -> null when every invariant holds, else the first broken one
  Napi::Value Verify(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Ready(info)) return env.Undefined();
    char err[512] = "";
    int rc = iomux_shm_verify(shm_, err, sizeof err);
    if (rc == 0) return env.Null();
    return Napi::String::New(env, err[0] ? err : strerror(-rc));
  }

  Napi::Value Config(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!shm_) return env.Undefined();
    iomux_shm_config c;
    iomux_shm_config_get(shm_, &c);
    Napi::Array a = Napi::Array::New(env, 4);
    a.Set(0u, Napi::Number::New(env, static_cast<double>(c.size)));
    a.Set(1u, Napi::Number::New(env, c.max_entries));
    a.Set(2u, Napi::Number::New(env, static_cast<double>(c.default_ttl)));
    a.Set(3u, Napi::Boolean::New(env, c.evict != 0));
    return a;
  }

  Napi::Value Fd(const Napi::CallbackInfo &info) {
    return Num(info.Env(), shm_ ? iomux_shm_fd(shm_) : -1);
  }

  // fast() -> { get, put }: the hot calls as plain functions bound to this
  // handle through their data pointer (raw N-API: no unwrap, no
  // CallbackInfo). The JavaScript object that holds them also holds this
  // handle, so they never outlive it; after close() they return -EBADF.
  //   get(klen) -> as Get without stale or target
  //   put(klen, value, ttl) -> as Put(SET, klen, value, value.length, BYTES, ttl, 0)
  Napi::Value Fast(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    napi_value o, fn;
    napi_create_object(env, &o);
    napi_create_function(env, "get", NAPI_AUTO_LENGTH, FastGet, this, &fn);
    napi_set_named_property(env, o, "get", fn);
    napi_create_function(env, "put", NAPI_AUTO_LENGTH, FastPut, this, &fn);
    napi_set_named_property(env, o, "put", fn);
    return Napi::Value(env, o);
  }

  static napi_value FastGet(napi_env env, napi_callback_info cbi) {
    size_t argc = 1;
    napi_value argv[1];
    void *data;
    napi_value r;
    napi_get_cb_info(env, cbi, &argc, argv, nullptr, &data);
    SharedCacheHandle *self = static_cast<SharedCacheHandle *>(data);
    int rc = -EBADF;
    if (self->shm_ && self->io_ && argc == 1) {
      double k = 0;
      napi_get_value_double(env, argv[0], &k);
      size_t klen = k < 0 || k > kKeyMax ? 0 : static_cast<size_t>(k);
      iomux_shm_item it;
      rc = iomux_shm_get(self->shm_, self->io_, klen, 0, self->ValueArea(), self->ValueCap(), &it);
      self->FillMeta(it);
      if (rc == 0 && it.len > self->ValueCap()) rc = 1;
    }
    napi_create_int32(env, rc, &r);
    return r;
  }

  static napi_value FastPut(napi_env env, napi_callback_info cbi) {
    size_t argc = 3;
    napi_value argv[3];
    void *data;
    napi_value r;
    napi_get_cb_info(env, cbi, &argc, argv, nullptr, &data);
    SharedCacheHandle *self = static_cast<SharedCacheHandle *>(data);
    int rc = -EBADF;
    uint8_t *val;
    size_t vlen;
    if (self->shm_ && self->io_ && argc == 3) {
      if (!Bytes(env, argv[1], &val, &vlen)) {
        rc = -EINVAL;
      } else {
        double k = 0, ttl = -1;
        napi_get_value_double(env, argv[0], &k);
        napi_get_value_double(env, argv[2], &ttl);
        size_t klen = k < 0 || k > kKeyMax ? 0 : static_cast<size_t>(k);
        iomux_shm_item it;
        rc = iomux_shm_put(self->shm_, IOMUX_SHM_SET, self->io_, klen, val, vlen, IOMUX_SHM_BYTES, Ttl(ttl), 0, &it);
        self->FillMeta(it);
      }
    }
    napi_create_int32(env, rc, &r);
    return r;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    iomux_shm_close(shm_);
    shm_ = nullptr;
    return info.Env().Undefined();
  }
};

// The sync region (deps/iomux/src/shm_sync.c): its mapping becomes an
// external ArrayBuffer, unmapped when that is collected. JavaScript does
// 32-bit Atomics on it (they are real atomic instructions on any integer
// typed array; only wait/notify need a SharedArrayBuffer). Every access is
// bounds-checked by the typed array, so a corrupted word can mislead a peer
// but not crash it.
struct SyncMapping {
  void *base;
  size_t size;
};

void SyncFinalize(napi_env, void *, void *hint) {
  SyncMapping *m = static_cast<SyncMapping *>(hint);
  iomux_sync_unmap(m->base, m->size);
  delete m;
}

Napi::Value SyncBuffer(napi_env env, void *base, size_t size) {
  SyncMapping *m = new SyncMapping{base, size};
  napi_value ab = nullptr;
  if (napi_create_external_arraybuffer(env, base, size, SyncFinalize, m, &ab) != napi_ok) {
    iomux_sync_unmap(base, size);
    delete m;
    Napi::Error::New(env, "sync region: cannot wrap the mapping").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  return Napi::Value(env, ab);
}

void ThrowSync(napi_env env, int rc, const std::string &msg) {
  Napi::Error e = Napi::Error::New(env, "sync region: " + msg + " (" + strerror(-rc) + ")");
  e.Set("code", Napi::String::New(env, rc == -EPROTO ? "ERR_IOMUX_SYNC_REGION" : "ERR_IOMUX_SHM"));
  e.Set("errno", Napi::Number::New(env, rc));
  e.ThrowAsJavaScriptException();
}

// syncCreate(nslots, rows, valueCap) -> [fd, ArrayBuffer]
Napi::Value SyncCreate(const Napi::CallbackInfo &info) {
  napi_env env = info.Env();
  iomux_sync_layout l = {static_cast<uint32_t>(Int(info, 0)), static_cast<uint32_t>(Int(info, 1)),
                         static_cast<uint32_t>(Int(info, 2))};
  int fd = -1;
  void *base = nullptr;
  size_t size = 0;
  int rc = iomux_sync_create(&l, &fd, &base, &size);
  if (rc) {
    ThrowSync(env, rc, rc == -EINVAL ? "layout out of range" : "create failed");
    return Napi::Value();
  }
  Napi::Value ab = SyncBuffer(env, base, size);
  if (ab.IsEmpty()) {
    close(fd);
    return Napi::Value();
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, fd));
  out.Set(1u, ab);
  return out;
}

// syncAttach(fd) -> ArrayBuffer (the fd stays the caller's)
Napi::Value SyncAttach(const Napi::CallbackInfo &info) {
  napi_env env = info.Env();
  void *base = nullptr;
  size_t size = 0;
  char err[128] = "";
  int rc = iomux_sync_attach(Int(info, 0), &base, &size, err, sizeof err);
  if (rc) {
    ThrowSync(env, rc, err);
    return Napi::Value();
  }
  return SyncBuffer(env, base, size);
}

// Doorbells (iomux_sync_bell_*): a process's bell is a datagram socket
// watched by a uv_poll_t on Node's loop, so a ring wakes the loop once and
// calls back into JavaScript; nothing here blocks.
struct Bell {
  uv_poll_t poll;
  int fd = -1;
  napi_env env = nullptr;
  napi_ref fn = nullptr;
  napi_async_context ctx = nullptr;
  bool closed = false;
};

// Calls fn from the loop (a uv callback, outside any JavaScript frame). A
// throw goes to 'uncaughtException', as a callback's from a node handle does.
void MakeCallback(napi_env env, napi_async_context ctx, napi_ref fnRef, size_t argc, const napi_value *args) {
  napi_value fn, recv, result;
  napi_get_reference_value(env, fnRef, &fn);
  napi_get_global(env, &recv);
  if (napi_make_callback(env, ctx, recv, fn, argc, args, &result) == napi_ok) return;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

void BellClosed(uv_handle_t *h) {
  Bell *b = static_cast<Bell *>(h->data);
  close(b->fd);
  delete b;
}

void BellShut(Bell *b) {
  if (b->closed) return;
  b->closed = true;
  uv_poll_stop(&b->poll);
  if (b->fn) napi_delete_reference(b->env, b->fn);
  if (b->ctx) napi_async_destroy(b->env, b->ctx);
  b->fn = nullptr;
  b->ctx = nullptr;
  uv_close(reinterpret_cast<uv_handle_t *>(&b->poll), BellClosed);
}

void BellReadable(uv_poll_t *h, int status, int) {
  Bell *b = static_cast<Bell *>(h->data);
  if (b->closed) return;
  int n = status < 0 ? status : iomux_sync_bell_drain(b->fd);
  napi_env env = b->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value arg;
  napi_create_int32(env, n, &arg);
  MakeCallback(env, b->ctx, b->fn, 1, &arg);
  napi_close_handle_scope(env, scope);
}

void BellEnvCleanup(void *data) { BellShut(static_cast<Bell *>(data)); }

// bellOpen(path, fn(rings)) -> close function, or -errno. fn runs once per
// wake with the number of rings read (or a negative errno). The bell does not
// keep the process alive (unref'd).
Napi::Value BellOpen(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsFunction()) {
    Napi::TypeError::New(env, "bellOpen(path, fn)").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = iomux_sync_bell_open(path.c_str());
  if (fd < 0) return Napi::Number::New(env, fd);
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(fd);
    return Napi::Number::New(env, -EINVAL);
  }
  Bell *b = new Bell;
  b->fd = fd;
  b->env = env;
  b->poll.data = b;
  int rc = uv_poll_init(loop, &b->poll, fd);
  if (rc < 0) {
    close(fd);
    delete b;
    return Napi::Number::New(env, rc);
  }
  napi_create_reference(env, info[1], 1, &b->fn);
  napi_value name;
  napi_create_string_utf8(env, "iomux.syncBell", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &b->ctx);
  uv_poll_start(&b->poll, UV_READABLE, BellReadable);
  uv_unref(reinterpret_cast<uv_handle_t *>(&b->poll));
  napi_add_env_cleanup_hook(env, BellEnvCleanup, b);
  auto ref = std::make_shared<Bell *>(b);  // cleared by the first close
  return Napi::Function::New(env, [ref](const Napi::CallbackInfo &ci) -> Napi::Value {
    Bell *bell = *ref;
    *ref = nullptr;
    if (bell && !bell->closed) {
      napi_remove_env_cleanup_hook(ci.Env(), BellEnvCleanup, bell);
      BellShut(bell);
    }
    return ci.Env().Undefined();
  }, "closeBell");
}

// bellRing(path, slot) -> 0 or -errno (see iomux_sync_bell_ring); one
// sending socket for the process (created on first use, thread-safe).
Napi::Value BellRing(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    Napi::TypeError::New(env, "bellRing(path, slot)").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  static const int sender = iomux_sync_bell_sender();
  if (sender < 0) return Napi::Number::New(env, sender);
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return Napi::Number::New(env, iomux_sync_bell_ring(sender, path.c_str(), static_cast<uint32_t>(Int(info, 1))));
}

// Life locks (iomux_sync_life_*). A container's main thread holds its row's
// lock; the master watches each row with a small thread blocked in
// iomux_sync_life_wait, which reports the holder's death to the loop through
// a uv_async_t. The threads wait in slices of kLifeSlice ms so that a
// teardown can stop them.
constexpr int kLifeSlice = 250;

struct LifeWatcher;

struct LifeWatch {
  LifeWatcher *lw;
  void *base;
  uint32_t row;
  double token;
  napi_ref ab;  // keeps the mapping alive while the thread reads it
  pthread_t th;
  int result = 0;
};

struct LifeWatcher {
  uv_async_t async;
  napi_env env = nullptr;
  napi_ref fn = nullptr;
  napi_async_context ctx = nullptr;
  std::mutex mu;
  std::vector<LifeWatch *> done;  // under mu
  std::vector<LifeWatch *> all;   // main thread only
  std::atomic<bool> stop{false};
};

// one per env; an env lives on one thread (the main one or a worker's)
thread_local LifeWatcher *tl_life = nullptr;

void *LifeThread(void *arg) {
  LifeWatch *w = static_cast<LifeWatch *>(arg);
  LifeWatcher *lw = w->lw;
  int rc = 0;
  while (!lw->stop.load()) {
    rc = iomux_sync_life_wait(w->base, w->row, kLifeSlice);
    if (rc != 0) break;
  }
  w->result = rc;
  {
    std::lock_guard<std::mutex> g(lw->mu);
    lw->done.push_back(w);
  }
  uv_async_send(&lw->async);
  return nullptr;
}

void LifeReport(uv_async_t *h) {
  LifeWatcher *lw = static_cast<LifeWatcher *>(h->data);
  std::vector<LifeWatch *> done;
  {
    std::lock_guard<std::mutex> g(lw->mu);
    done.swap(lw->done);
  }
  napi_env env = lw->env;
  for (LifeWatch *w : done) {
    pthread_join(w->th, nullptr);
    for (auto it = lw->all.begin(); it != lw->all.end(); ++it)
      if (*it == w) {
        lw->all.erase(it);
        break;
      }
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_delete_reference(env, w->ab);
    if (lw->fn && !lw->stop.load()) {
      napi_value args[2];
      napi_create_double(env, w->token, &args[0]);
      napi_create_int32(env, w->result, &args[1]);
      MakeCallback(env, lw->ctx, lw->fn, 2, args);
    }
    napi_close_handle_scope(env, scope);
    delete w;
  }
}

void LifeCleanup(void *data) {
  LifeWatcher *lw = static_cast<LifeWatcher *>(data);
  lw->stop.store(true);
  for (LifeWatch *w : lw->all) pthread_join(w->th, nullptr);  // each within a slice
  for (LifeWatch *w : lw->all) delete w;
  lw->all.clear();
  lw->done.clear();
  if (lw->fn) napi_delete_reference(lw->env, lw->fn);
  if (lw->ctx) napi_async_destroy(lw->env, lw->ctx);
  tl_life = nullptr;
  uv_close(reinterpret_cast<uv_handle_t *>(&lw->async), [](uv_handle_t *h) { delete static_cast<LifeWatcher *>(h->data); });
}


bool RegionBase(napi_env env, napi_value v, void **base) {
  bool is = false;
  size_t len = 0;
  if (napi_is_arraybuffer(env, v, &is) != napi_ok || !is) return false;
  return napi_get_arraybuffer_info(env, v, base, &len) == napi_ok && len >= IOMUX_SYNC_HEADER;
}

// lifeInit(region, row) / lifeHold(region, row) -> 0 or -errno
Napi::Value LifeInit(const Napi::CallbackInfo &info) {
  void *base = nullptr;
  if (!RegionBase(info.Env(), info[0], &base)) return Napi::Number::New(info.Env(), -EINVAL);
  return Napi::Number::New(info.Env(), iomux_sync_life_init(base, static_cast<uint32_t>(Int(info, 1))));
}

Napi::Value LifeHold(const Napi::CallbackInfo &info) {
  void *base = nullptr;
  if (!RegionBase(info.Env(), info[0], &base)) return Napi::Number::New(info.Env(), -EINVAL);
  return Napi::Number::New(info.Env(), iomux_sync_life_hold(base, static_cast<uint32_t>(Int(info, 1))));
}

// lifeWatch(region, row, token, fn(token, result)) -> 0 or -errno: a thread
// waits for row's holder to die; fn(token, 1) then (a negative errno if the
// wait failed). fn is the one callback of this env (the last one given).
Napi::Value LifeWatchRow(const Napi::CallbackInfo &info) {
  napi_env env = info.Env();
  void *base = nullptr;
  if (!RegionBase(env, info[0], &base) || !info[3].IsFunction()) return Napi::Number::New(env, -EINVAL);
  uint32_t row = static_cast<uint32_t>(Int(info, 1));
  if (row >= static_cast<const uint32_t *>(base)[IOMUX_SYNC_H_ROWS]) return Napi::Number::New(env, -EINVAL);
  LifeWatcher *lw = tl_life;
  if (!lw) {
    uv_loop_t *loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) return Napi::Number::New(env, -EINVAL);
    lw = new LifeWatcher;
    lw->env = env;
    lw->async.data = lw;
    if (uv_async_init(loop, &lw->async, LifeReport) < 0) {
      delete lw;
      return Napi::Number::New(env, -ENOMEM);
    }
    uv_unref(reinterpret_cast<uv_handle_t *>(&lw->async));
    napi_value name;
    napi_create_string_utf8(env, "iomux.syncLife", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, nullptr, name, &lw->ctx);
    tl_life = lw;
    napi_add_env_cleanup_hook(env, LifeCleanup, lw);
  }
  if (lw->fn) napi_delete_reference(env, lw->fn);
  napi_create_reference(env, info[3], 1, &lw->fn);
  LifeWatch *w = new LifeWatch{lw, base, row, Dbl(info, 2), nullptr, pthread_t(), 0};
  napi_create_reference(env, info[0], 1, &w->ab);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  int rc = pthread_create(&w->th, &attr, LifeThread, w);
  pthread_attr_destroy(&attr);
  if (rc) {
    napi_delete_reference(env, w->ab);
    delete w;
    return Napi::Number::New(env, -rc);
  }
  lw->all.push_back(w);
  return Napi::Number::New(env, 0);
}

}  // namespace

Napi::Object DefineSyncRegion(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("create", Napi::Function::New(env, SyncCreate, "syncCreate"));
  o.Set("attach", Napi::Function::New(env, SyncAttach, "syncAttach"));
  o.Set("bellOpen", Napi::Function::New(env, BellOpen, "bellOpen"));
  o.Set("bellRing", Napi::Function::New(env, BellRing, "bellRing"));
  o.Set("lifeInit", Napi::Function::New(env, LifeInit, "lifeInit"));
  o.Set("lifeHold", Napi::Function::New(env, LifeHold, "lifeHold"));
  o.Set("lifeWatch", Napi::Function::New(env, LifeWatchRow, "lifeWatch"));
  return o;
}

Napi::Function DefineSharedCacheHandle(Napi::Env env) { return SharedCacheHandle::Define(env); }
