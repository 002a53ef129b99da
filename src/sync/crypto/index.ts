/**
 * The encryption layer's public API for the sync layer and the zippy-key CLI. See
 * docs/FORMAT.md "Encryption and key files" for the formats and how the sync layer calls this.
 */
export {
  type EnvelopeHeader, type OpenOptions, type PlainSink, type SealOptions, type SealedKind, type SealedReaderOptions,
  SealedReader, SealedReaderSync, Sealer, decodeEnvelopeHeader, envelopeChunkCount, envelopeHeaderLayout, envelopeMagic, isKeyId, isSealed,
  openSealed, plainSizeOfSealed, readSealedFile, sealFile, sealedSizeBytes, writeSealedFile,
} from './envelope.js';
export {
  type InitResult, type KeyStatus, type Keyring, type KeyringResult, type LoadKeyringOptions, type MemberStatus, type PassphraseLimits,
  type RevokeResult, blockIdKeyOf, ensureEncryptedSyncDir, grantAccess, initEncryptedSyncDir, isEncrypted, joinWithPassphrase, keyStatus, loadKeyring,
  plainContentOf, requestAccess, requestFingerprint, revokeAccess, setPassphrase,
} from './keyring.js';
export { type BoxKey, defaultConfigDir, fingerprintOf, loadOrCreateBoxid } from './machine.js';
