# A test variant of the addon, never part of the package: the same addon and
# core, with the kqueue backend built over deps/iomux/test/kqueue_emu.c (a
# kqueue emulated over epoll), so that the JavaScript suites can run on the
# kqueue backend on Linux:
#
#   npm run build:kqemu                            # this project, on its own
#   IOMUX_BACKEND=kqueue-emulated npx tap          # lib/binding.ts loads it
#
# It is a project of its own, not a second target in ../../binding.gyp: gyp
# copies every loadable module into build/Release/, where node-gyp-build
# takes the first .node it finds.
{
  "targets": [
    {
      "target_name": "iomux_kqemu",
      # Every core file, so a new backend needs no edit here; each compiles
      # to nothing where its kernel interface does not exist.
      "sources": [
        "../../addon/binding.cc",
        "../../addon/shm_binding.cc",
        "<!@(ls ../../deps/iomux/src/*.c)",
        "../../deps/iomux/test/kqueue_emu.c"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "../../deps/iomux/include"
      ],
      "defines": [
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "IOMUX_KQUEUE_EMULATION"
      ],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=gnu++17"]
    }
  ]
}
