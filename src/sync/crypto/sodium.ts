/**
 * libsodium, loaded once. The WebAssembly module initialises asynchronously; this module awaits
 * it at load (top-level await), so every importer may call `sodium.*` synchronously.
 *
 * The sumo build is used because Argon2id (crypto_pwhash) and HChaCha20 (crypto_core_hchacha20)
 * are not in the standard build.
 */
import sodiumModule from 'libsodium-wrappers-sumo';

await sodiumModule.ready;

export const sodium = sodiumModule;
