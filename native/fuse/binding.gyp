# Builds build/Release/fuse_native.node against the system libfuse 2.9 (Debian: libfuse-dev),
# found through pkg-config. See README.md; run it through `npm run build:native`.
{
  "targets": [{
    "target_name": "fuse_native",
    "sources": ["fuse-native.c"],
    "defines": ["NAPI_VERSION=8"],
    "cflags": [
      "-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
      "-Wno-missing-field-initializers",
      "<!@(pkg-config --cflags fuse)"
    ],
    "libraries": ["<!@(pkg-config --libs fuse)"]
  }]
}
