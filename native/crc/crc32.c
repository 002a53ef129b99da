/*
 * zippy-fs CRC-32 addon: the zip/zlib CRC-32 (reflected polynomial 0xEDB88320, initial value
 * and final xor 0xFFFFFFFF), returning exactly what zlib's crc32(value, data, length) returns,
 * only faster. The TypeScript side is src/crc32.ts, the only code that should load this addon.
 *
 * Implementations, chosen once at load time from what the CPU offers (see README.md):
 *   3 "vpclmulqdq" AVX-512 + VPCLMULQDQ: four 512-bit accumulators fold 256 bytes per step;
 *   2 "pclmul"     SSE4.1 + PCLMULQDQ: four 128-bit accumulators fold 64 bytes per step
 *                  (Gopal, Ozturk et al., "Fast CRC Computation for Generic Polynomials
 *                  Using PCLMULQDQ Instruction", Intel 2009), Barrett reduction to 32 bits;
 *   1 "table"      portable slicing-by-8 tables, also used for short inputs and the tails
 *                  the folding loops leave.
 * Every path computes the same function; the tests force each one and compare with zlib.
 *
 * State convention inside this file: a "state" is the CRC register, i.e. ~crc. crc32() of
 * zlib with a previous value v starts from state ~v and returns ~state.
 *
 * Exports (Node-API 8, context-aware so worker threads can load it too):
 *   crc32(data, value = 0, impl = 0) -> number
 *   recordChecksums(headers, headerAt, headerStride, payloads, payloadFirst, payloadStep,
 *                   count, out, impl = 0) -> undefined
 *   implementations() -> {name, id}[]   the implementations this CPU runs (impl ids >= 1)
 *   selected() -> string                the name of the one impl = 0 uses
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC_X86 1
#include <immintrin.h>
#endif

#define POLY_REFLECTED 0xEDB88320u
/* Size of a block record header (src/blocks/record.ts) and where its crc field lies. */
#define RECORD_HEADER_BYTES 32
#define RECORD_CRC_AT 12
#define RECORD_CRC_BYTES 4

enum { IMPL_AUTO = 0, IMPL_TABLE = 1, IMPL_PCLMUL = 2, IMPL_VPCLMUL = 3, IMPL_COUNT = 4 };
static const char *const impl_names[IMPL_COUNT] = { "auto", "table", "pclmul", "vpclmulqdq" };

/* ---------------------------------------------------------------------------------------
 * Portable: slicing-by-8
 * ------------------------------------------------------------------------------------- */

/* table[k][b]: the state change of byte b followed by k zero bytes. */
static uint32_t table[8][256];
static int impl_ok[IMPL_COUNT];
static int impl_best = IMPL_TABLE;

static uint32_t update_table(uint32_t s, const uint8_t *p, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  while (n >= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= s;
    s = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24]
      ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^ table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
    p += 8;
    n -= 8;
  }
#endif
  while (n-- > 0) s = table[0][(s ^ *p++) & 0xff] ^ (s >> 8);
  return s;
}

static void init_tables(void) {
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t s = b;
    for (int i = 0; i < 8; i++) s = (s >> 1) ^ ((s & 1) ? POLY_REFLECTED : 0);
    table[0][b] = s;
  }
  for (int k = 1; k < 8; k++) {
    for (uint32_t b = 0; b < 256; b++) table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xff];
  }
}

#ifdef CRC_X86
/* ---------------------------------------------------------------------------------------
 * x86: carry-less multiplication folding
 *
 * Constants, bit-reflected and shifted left by one, as in the Intel paper's appendix and in
 * Linux's arch/x86/crypto/crc32-pclmul_asm.S and Chromium zlib's crc32_simd.c; each pair
 * {lo, hi} multiplies the low and the high 64 bits of an accumulator:
 *   fold 2048 bits: x^(2048+32), x^(2048-32) mod P  -> 0x011542778a, 0x01322d1430
 *   fold  512 bits: x^(512+32),  x^(512-32)  mod P  -> 0x0154442bd4, 0x01c6e41596
 *   fold  128 bits: x^(128+32),  x^(128-32)  mod P  -> 0x01751997d0, 0x00ccaa009e
 *   64 -> 32 bits:  x^64 mod P                      -> 0x0163cd6124
 *   Barrett:        P' = 0x01db710641, mu = 0x01f7011641
 * ------------------------------------------------------------------------------------- */

#define K2048_LO 0x011542778aULL
#define K2048_HI 0x01322d1430ULL
#define K512_LO 0x0154442bd4ULL
#define K512_HI 0x01c6e41596ULL
#define K128_LO 0x01751997d0ULL
#define K128_HI 0x00ccaa009eULL
#define K64 0x0163cd6124ULL
#define BARRETT_P 0x01db710641ULL
#define BARRETT_MU 0x01f7011641ULL

#define TARGET_PCLMUL __attribute__((target("pclmul,sse4.1")))
#define TARGET_VPCLMUL __attribute__((target("pclmul,sse4.1,avx2,avx512f,avx512vl,vpclmulqdq")))

/* acc * x^d + next, for the fold distance d the constant k stands for. */
TARGET_PCLMUL static inline __m128i fold128(__m128i acc, __m128i k, __m128i next) {
  __m128i lo = _mm_clmulepi64_si128(acc, k, 0x00);
  __m128i hi = _mm_clmulepi64_si128(acc, k, 0x11);
  return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

/* The state of a message whose folded remainder is the 128-bit `acc` (32-bit CRC register). */
TARGET_PCLMUL static inline uint32_t reduce128(__m128i acc) {
  const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
  /* 128 -> 96 bits: the low half times x^(128-32) mod P, added to the high half. */
  __m128i t = _mm_clmulepi64_si128(acc, _mm_set_epi64x((long long)K128_HI, 0), 0x10);
  acc = _mm_xor_si128(_mm_srli_si128(acc, 8), t);
  /* 96 -> 64 bits. */
  t = _mm_srli_si128(acc, 4);
  acc = _mm_clmulepi64_si128(_mm_and_si128(acc, low32), _mm_set_epi64x(0, (long long)K64), 0x00);
  acc = _mm_xor_si128(acc, t);
  /* Barrett reduction 64 -> 32 bits. */
  const __m128i barrett = _mm_set_epi64x((long long)BARRETT_MU, (long long)BARRETT_P);
  t = _mm_clmulepi64_si128(_mm_and_si128(acc, low32), barrett, 0x10);
  t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), barrett, 0x00);
  acc = _mm_xor_si128(acc, t);
  return (uint32_t)_mm_extract_epi32(acc, 1);
}

/* Folds the first n & ~15 bytes (n >= 64) into state s; returns the new state. */
TARGET_PCLMUL static uint32_t fold_pclmul(uint32_t s, const uint8_t *p, size_t n) {
  const __m128i *v = (const __m128i *)p;
  __m128i a0 = _mm_xor_si128(_mm_loadu_si128(v), _mm_cvtsi32_si128((int)s));
  __m128i a1 = _mm_loadu_si128(v + 1);
  __m128i a2 = _mm_loadu_si128(v + 2);
  __m128i a3 = _mm_loadu_si128(v + 3);
  v += 4;
  n -= 64;
  const __m128i k512 = _mm_set_epi64x((long long)K512_HI, (long long)K512_LO);
  for (; n >= 64; n -= 64, v += 4) {
    a0 = fold128(a0, k512, _mm_loadu_si128(v));
    a1 = fold128(a1, k512, _mm_loadu_si128(v + 1));
    a2 = fold128(a2, k512, _mm_loadu_si128(v + 2));
    a3 = fold128(a3, k512, _mm_loadu_si128(v + 3));
  }
  const __m128i k128 = _mm_set_epi64x((long long)K128_HI, (long long)K128_LO);
  __m128i acc = fold128(a0, k128, a1);
  acc = fold128(acc, k128, a2);
  acc = fold128(acc, k128, a3);
  for (; n >= 16; n -= 16, v++) acc = fold128(acc, k128, _mm_loadu_si128(v));
  return reduce128(acc);
}

TARGET_PCLMUL static uint32_t update_pclmul(uint32_t s, const uint8_t *p, size_t n) {
  if (n < 64) return update_table(s, p, n);
  size_t folded = n & ~(size_t)15;
  s = fold_pclmul(s, p, folded);
  return update_table(s, p + folded, n - folded);
}

TARGET_VPCLMUL static inline __m512i fold512(__m512i acc, __m512i k, __m512i next) {
  __m512i lo = _mm512_clmulepi64_epi128(acc, k, 0x00);
  __m512i hi = _mm512_clmulepi64_epi128(acc, k, 0x11);
  return _mm512_ternarylogic_epi64(lo, hi, next, 0x96); /* lo ^ hi ^ next */
}

/* Folds the first n & ~63 bytes (n >= 256) into state s; returns the new state. */
TARGET_VPCLMUL static uint32_t fold_vpclmul(uint32_t s, const uint8_t *p, size_t n) {
  const __m512i *v = (const __m512i *)p;
  __m512i a0 = _mm512_xor_si512(_mm512_loadu_si512(v), _mm512_castsi128_si512(_mm_cvtsi32_si128((int)s)));
  __m512i a1 = _mm512_loadu_si512(v + 1);
  __m512i a2 = _mm512_loadu_si512(v + 2);
  __m512i a3 = _mm512_loadu_si512(v + 3);
  v += 4;
  n -= 256;
  const __m512i k2048 = _mm512_set_epi64((long long)K2048_HI, (long long)K2048_LO, (long long)K2048_HI, (long long)K2048_LO,
    (long long)K2048_HI, (long long)K2048_LO, (long long)K2048_HI, (long long)K2048_LO);
  for (; n >= 256; n -= 256, v += 4) {
    a0 = fold512(a0, k2048, _mm512_loadu_si512(v));
    a1 = fold512(a1, k2048, _mm512_loadu_si512(v + 1));
    a2 = fold512(a2, k2048, _mm512_loadu_si512(v + 2));
    a3 = fold512(a3, k2048, _mm512_loadu_si512(v + 3));
  }
  const __m512i k512 = _mm512_set_epi64((long long)K512_HI, (long long)K512_LO, (long long)K512_HI, (long long)K512_LO,
    (long long)K512_HI, (long long)K512_LO, (long long)K512_HI, (long long)K512_LO);
  __m512i acc = fold512(a0, k512, a1);
  acc = fold512(acc, k512, a2);
  acc = fold512(acc, k512, a3);
  for (; n >= 64; n -= 64, v++) acc = fold512(acc, k512, _mm512_loadu_si512(v));
  /* The four 128-bit lanes, lowest address first, fold into one. */
  const __m128i k128 = _mm_set_epi64x((long long)K128_HI, (long long)K128_LO);
  __m128i x = _mm512_extracti32x4_epi32(acc, 0);
  x = fold128(x, k128, _mm512_extracti32x4_epi32(acc, 1));
  x = fold128(x, k128, _mm512_extracti32x4_epi32(acc, 2));
  x = fold128(x, k128, _mm512_extracti32x4_epi32(acc, 3));
  return reduce128(x);
}

TARGET_VPCLMUL static uint32_t update_vpclmul(uint32_t s, const uint8_t *p, size_t n) {
  if (n < 256) return update_pclmul(s, p, n);
  size_t folded = n & ~(size_t)63;
  s = fold_vpclmul(s, p, folded);
  return update_table(s, p + folded, n - folded);
}

static void detect_cpu(void) {
  __builtin_cpu_init();
  impl_ok[IMPL_PCLMUL] = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  impl_ok[IMPL_VPCLMUL] = impl_ok[IMPL_PCLMUL] && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f")
    && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq");
}
#else
static void detect_cpu(void) {}
#endif

/* The state after `n` bytes at `p`, starting from state `s`, with implementation `impl`. */
static uint32_t update(int impl, uint32_t s, const uint8_t *p, size_t n) {
  switch (impl) {
#ifdef CRC_X86
    case IMPL_VPCLMUL: return update_vpclmul(s, p, n);
    case IMPL_PCLMUL: return update_pclmul(s, p, n);
#endif
    default: return update_table(s, p, n);
  }
}

/* Runs when the shared object is loaded (once per process, whatever the number of threads). */
__attribute__((constructor)) static void init_once(void) {
  init_tables();
  impl_ok[IMPL_TABLE] = 1;
  detect_cpu();
  impl_best = impl_ok[IMPL_VPCLMUL] ? IMPL_VPCLMUL : impl_ok[IMPL_PCLMUL] ? IMPL_PCLMUL : IMPL_TABLE;
  impl_ok[IMPL_AUTO] = 1;
}

/* ---------------------------------------------------------------------------------------
 * Node-API
 * ------------------------------------------------------------------------------------- */

#define CHECK(env, call)                                                             \
  do {                                                                               \
    if ((call) != napi_ok) {                                                         \
      const napi_extended_error_info *info_ = NULL;                                  \
      napi_get_last_error_info((env), &info_);                                       \
      bool pending_ = false;                                                         \
      napi_is_exception_pending((env), &pending_);                                   \
      if (!pending_) {                                                               \
        napi_throw_error((env), NULL, info_ && info_->error_message ? info_->error_message : #call); \
      }                                                                              \
      return NULL;                                                                   \
    }                                                                                \
  } while (0)

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *message) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
  return NULL;
}

/* The bytes of a TypedArray or DataView (any element type, as zlib.crc32 takes them). */
static int bytes_of(napi_env env, napi_value value, const uint8_t **data, size_t *length) {
  bool is = false;
  if (napi_is_typedarray(env, value, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t count;
    void *base;
    size_t offset;
    if (napi_get_typedarray_info(env, value, &type, &count, &base, NULL, &offset) != napi_ok) return 0;
    size_t element = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: element = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: element = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: element = 8; break;
      default: element = 1;
    }
    *data = count > 0 ? (const uint8_t *)base : (const uint8_t *)"";
    *length = count * element;
    return 1;
  }
  if (napi_is_dataview(env, value, &is) == napi_ok && is) {
    size_t bytes;
    void *base;
    if (napi_get_dataview_info(env, value, &bytes, &base, NULL, NULL) != napi_ok) return 0;
    *data = bytes > 0 ? (const uint8_t *)base : (const uint8_t *)"";
    *length = bytes;
    return 1;
  }
  return 0;
}

/* An integer argument in [min, max]; undefined gives `fallback`. Returns 0 after throwing. */
static int int_arg(napi_env env, napi_value value, double min, double max, double fallback, const char *name, double *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return 0;
  if (type == napi_undefined) {
    *out = fallback;
    return 1;
  }
  char message[160];
  if (type != napi_number) {
    snprintf(message, sizeof message, "The \"%s\" argument must be of type number", name);
    throw_type(env, message);
    return 0;
  }
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok) return 0;
  if (!(d >= min && d <= max && d == (double)(int64_t)d)) {
    snprintf(message, sizeof message, "The value of \"%s\" is out of range. It must be an integer >= %.0f and <= %.0f", name, min, max);
    throw_range(env, message);
    return 0;
  }
  *out = d;
  return 1;
}

static int impl_arg(napi_env env, napi_value value, int *impl) {
  double d;
  if (!int_arg(env, value, 0, IMPL_COUNT - 1, IMPL_AUTO, "impl", &d)) return 0;
  int i = (int)d;
  if (!impl_ok[i]) {
    char message[120];
    snprintf(message, sizeof message, "CRC-32 implementation %s is not supported by this CPU", impl_names[i]);
    napi_throw_error(env, "ERR_CRC32_IMPL", message);
    return 0;
  }
  *impl = i == IMPL_AUTO ? impl_best : i;
  return 1;
}

/* crc32(data, value = 0, impl = 0): zlib.crc32(data, value). */
static napi_value js_crc32(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  /* Node-API fills the arguments not passed with undefined. */
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  const uint8_t *data;
  size_t length;
  if (!bytes_of(env, argv[0], &data, &length)) return throw_type(env, "The \"data\" argument must be a TypedArray or DataView");
  double value;
  if (!int_arg(env, argv[1], 0, 4294967295.0, 0, "value", &value)) return NULL;
  int impl;
  if (!impl_arg(env, argv[2], &impl)) return NULL;
  uint32_t crc = ~update(impl, ~(uint32_t)value, data, length);
  napi_value result;
  CHECK(env, napi_create_uint32(env, crc, &result));
  return result;
}

/*
 * recordChecksums(headers, headerAt, headerStride, payloads, payloadFirst, payloadStep, count,
 *                 out, impl = 0)
 * For i in 0..count-1: out[i] = crc32(payload_i, crc32(header_i with bytes 12..15 taken as
 * zero)), where header_i is the 32 bytes at headers[headerAt + i * headerStride] and payload_i
 * is payloads[payloadFirst + i * payloadStep] (any TypedArray, its bytes). The headers are
 * only read. This is the block record checksum of src/blocks/record.ts.
 */
static napi_value js_record_checksums(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  /* Node-API fills the arguments not passed with undefined. */
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_value undefined;
  CHECK(env, napi_get_undefined(env, &undefined));
  const uint8_t *headers;
  size_t headers_length;
  if (!bytes_of(env, argv[0], &headers, &headers_length)) return throw_type(env, "The \"headers\" argument must be a TypedArray or DataView");
  double header_at, header_stride, payload_first, payload_step, count_d;
  const double index_max = 9007199254740991.0;
  if (!int_arg(env, argv[1], 0, index_max, -1, "headerAt", &header_at)) return NULL;
  if (!int_arg(env, argv[2], 0, index_max, -1, "headerStride", &header_stride)) return NULL;
  bool is_array = false;
  CHECK(env, napi_is_array(env, argv[3], &is_array));
  if (!is_array) return throw_type(env, "The \"payloads\" argument must be an Array");
  if (!int_arg(env, argv[4], 0, index_max, -1, "payloadFirst", &payload_first)) return NULL;
  if (!int_arg(env, argv[5], 0, index_max, -1, "payloadStep", &payload_step)) return NULL;
  if (!int_arg(env, argv[6], 0, index_max, -1, "count", &count_d)) return NULL;
  if (header_at < 0 || header_stride < 0 || payload_first < 0 || payload_step < 0 || count_d < 0) {
    return throw_type(env, "recordChecksums needs headerAt, headerStride, payloadFirst, payloadStep and count");
  }
  bool is_typed = false;
  CHECK(env, napi_is_typedarray(env, argv[7], &is_typed));
  napi_typedarray_type out_type = napi_int8_array;
  size_t out_length = 0;
  void *out_base = NULL;
  if (is_typed) CHECK(env, napi_get_typedarray_info(env, argv[7], &out_type, &out_length, &out_base, NULL, NULL));
  if (!is_typed || out_type != napi_uint32_array) return throw_type(env, "The \"out\" argument must be a Uint32Array");
  int impl;
  if (!impl_arg(env, argv[8], &impl)) return NULL;
  size_t count = (size_t)count_d;
  if (count == 0) return undefined;
  if (out_length < count) return throw_range(env, "out is shorter than count");
  if (header_at + (double)(count - 1) * header_stride + RECORD_HEADER_BYTES > (double)headers_length) {
    return throw_range(env, "the headers lie outside the headers buffer");
  }
  uint32_t payloads_length;
  CHECK(env, napi_get_array_length(env, argv[3], &payloads_length));
  if (payload_first + (double)(count - 1) * payload_step >= (double)payloads_length) {
    return throw_range(env, "the payloads lie outside the payloads array");
  }
  uint32_t *out = (uint32_t *)out_base;
  for (size_t i = 0; i < count; i++) {
    napi_value element;
    CHECK(env, napi_get_element(env, argv[3], (uint32_t)(payload_first + (double)i * payload_step), &element));
    const uint8_t *payload;
    size_t payload_length;
    if (!bytes_of(env, element, &payload, &payload_length)) return throw_type(env, "every payload must be a TypedArray or DataView");
    uint8_t header[RECORD_HEADER_BYTES];
    memcpy(header, headers + (size_t)header_at + i * (size_t)header_stride, RECORD_HEADER_BYTES);
    memset(header + RECORD_CRC_AT, 0, RECORD_CRC_BYTES);
    uint32_t s = update(impl, 0xffffffffu, header, RECORD_HEADER_BYTES);
    out[i] = ~update(impl, s, payload, payload_length);
  }
  return undefined;
}

static napi_value js_implementations(napi_env env, napi_callback_info info) {
  napi_value list;
  CHECK(env, napi_create_array(env, &list));
  uint32_t at = 0;
  for (int i = 1; i < IMPL_COUNT; i++) {
    if (!impl_ok[i]) continue;
    napi_value entry, name, id;
    CHECK(env, napi_create_object(env, &entry));
    CHECK(env, napi_create_string_utf8(env, impl_names[i], NAPI_AUTO_LENGTH, &name));
    CHECK(env, napi_create_int32(env, i, &id));
    CHECK(env, napi_set_named_property(env, entry, "name", name));
    CHECK(env, napi_set_named_property(env, entry, "id", id));
    CHECK(env, napi_set_element(env, list, at++, entry));
  }
  return list;
}

static napi_value js_selected(napi_env env, napi_callback_info info) {
  napi_value result;
  CHECK(env, napi_create_string_utf8(env, impl_names[impl_best], NAPI_AUTO_LENGTH, &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    { "crc32", NULL, js_crc32, NULL, NULL, NULL, napi_enumerable, NULL },
    { "recordChecksums", NULL, js_record_checksums, NULL, NULL, NULL, napi_enumerable, NULL },
    { "implementations", NULL, js_implementations, NULL, NULL, NULL, napi_enumerable, NULL },
    { "selected", NULL, js_selected, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
