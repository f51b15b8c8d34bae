{
  "targets": [
    {
      "target_name": "iomux",
      "sources": [
        "addon/binding.cc",
        "addon/shm_binding.cc",
        "deps/iomux/src/shm.c",
        "deps/iomux/src/shm_sync.c",
        "deps/iomux/src/loop.c",
        "deps/iomux/src/timer.c",
        "deps/iomux/src/sock.c",
        "deps/iomux/src/sys.c",
        "deps/iomux/src/batch.c",
        "deps/iomux/src/uring.c",
        "deps/iomux/src/forward.c",
        "deps/iomux/src/backend_epoll.c",
        "deps/iomux/src/backend_io_uring.c",
        "deps/iomux/src/backend_kqueue.c"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "deps/iomux/include"
      ],
      "defines": [
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=gnu++17"],
      "xcode_settings": {
        "GCC_C_LANGUAGE_STANDARD": "gnu11",
        "CLANG_CXX_LANGUAGE_STANDARD": "gnu++17",
        "WARNING_CFLAGS": ["-Wall", "-Wextra"],
        "MACOSX_DEPLOYMENT_TARGET": "10.15"
      }
    }
  ]
}
