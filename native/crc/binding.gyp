# Builds build/Release/crc32.node (no dependencies beyond Node's headers). The file is built
# for the default -march; the SIMD functions carry target attributes and run only when the
# CPU has the instructions (runtime dispatch in crc32.c). Run it through `npm run build:native`.
{
  "targets": [{
    "target_name": "crc32",
    "sources": ["crc32.c"],
    "defines": ["NAPI_VERSION=8"],
    "cflags": [
      "-std=gnu11", "-O3", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
      "-Wno-missing-field-initializers"
    ]
  }]
}
