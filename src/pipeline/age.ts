// The "age" encryption stage: artifacts in the age v1 format (age-encryption.org/v1), so the
// standard `age -d` reads them and dbstash reads files made by `age -r`.
//
// The header (file key wrapping for X25519 recipients or an scrypt passphrase, header MAC) comes
// from the age-encryption package. The payload runs on Node's native crypto: the file key and a
// random 16-byte nonce give the payload key (HKDF-SHA256, info "payload"), and the plaintext is
// sealed in 64 KiB chunks with ChaCha20-Poly1305, each chunk's nonce being an 11-byte big-endian
// counter followed by a flag byte that is 1 on the last chunk only (the STREAM construction), so
// truncation, reordering and flipped bits are all detected.
//
// Passphrases: the package writes the scrypt stanza; reading one (here, and to learn the file key
// after writing) uses node:crypto's scrypt, which runs natively in the thread pool where the
// package's pure-JS scrypt would hold the event loop for seconds. The package still checks the
// header MAC with the file key found that way, so a wrong unwrapping cannot go unnoticed.
//
// Manifest parameters: { recipients: ["age1…"] } (public keys only) or { scrypt: true }. Secrets
// for decoding (identities, passphrase) come from the StageContext and are never recorded.

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  scrypt,
  type KeyObject,
} from 'node:crypto';
import { bech32 } from '@scure/base';
import { Transform, type TransformCallback } from 'node:stream';
import type { Decrypter, Identity, Stanza } from 'age-encryption';
import { ConfigError, DecryptError, IntegrityError } from '../core/errors.js';
import { registerStage, type Stage, type StageContext } from './stage.js';

const CHUNK = 64 * 1024;
const TAG = 16;
const SEALED = CHUNK + TAG;
const NONCE = 16;
const MAX_HEADER = 1 << 20;
const MAGIC = Buffer.from('age-encryption.org/v1\n');
const MAC_LINE = Buffer.from('\n--- ');

/** age-encryption (and its post-quantum dependencies) loads only when a header is made or read. */
const loadAge = () => import('age-encryption');

/**
 * The payload key as raw bytes: createCipheriv with a Buffer key is ~10% faster per 64 KiB chunk
 * than with a KeyObject, which it unwraps on every call.
 */
function payloadKey(fileKey: Uint8Array, nonce: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32));
}

function chunkNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Length of the header (through the MAC line's newline), or -1 while it is incomplete. */
function headerLength(bytes: Buffer): number {
  const mac = bytes.indexOf(MAC_LINE);
  if (mac < 0) return -1;
  const end = bytes.indexOf(0x0a, mac + MAC_LINE.length);
  return end < 0 ? -1 : end + 1;
}

/** A FIFO of buffers from which fixed-size pieces are taken without copying when possible. */
class ByteQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    this.parts.push(chunk);
    this.length += chunk.length;
  }

  /** The next n bytes as slices of the queued buffers (no copy). */
  takeParts(n: number): Buffer[] {
    const out: Buffer[] = [];
    this.length -= n;
    while (n > 0) {
      const part = this.parts[0];
      if (part.length <= n) {
        out.push(this.parts.shift()!);
        n -= part.length;
      } else {
        out.push(part.subarray(0, n));
        this.parts[0] = part.subarray(n);
        n = 0;
      }
    }
    return out;
  }

  /** The next n bytes as one buffer (copied only when they span several queued buffers). */
  take(n: number): Buffer {
    const parts = this.takeParts(n);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }

  takeAll(): Buffer {
    return this.take(this.length);
  }
}

const SCRYPT_LABEL = 'age-encryption.org/v1/scrypt';
/** The work factor age itself refuses to go beyond when decrypting (2^20 × 1 KiB of memory). */
const MAX_SCRYPT_LOG_N = 20;

function nativeScrypt(passphrase: string, salt: Buffer, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  return new Promise((resolve, reject) =>
    scrypt(passphrase, salt, 32, { N, r: 8, p: 1, maxmem: 128 * 8 * N + (1 << 20) }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** age's scrypt identity (the stanza "-> scrypt <salt> <logN>"), unwrapped with node:crypto. */
export function scryptIdentity(passphrase: string): Identity {
  return {
    async unwrapFileKey(stanzas: Stanza[]): Promise<Uint8Array | null> {
      for (const stanza of stanzas) {
        if (stanza.args[0] !== 'scrypt') continue;
        if (stanzas.length !== 1) throw new Error('scrypt recipient is not the only one in the header');
        const [, saltText, logNText] = stanza.args;
        const salt = Buffer.from(saltText ?? '', 'base64');
        if (stanza.args.length !== 3 || !/^[1-9][0-9]*$/.test(logNText) || salt.length !== 16 || stanza.body.length !== 32) {
          throw new Error('invalid scrypt stanza');
        }
        const logN = Number(logNText);
        if (logN > MAX_SCRYPT_LOG_N) throw new Error('scrypt work factor is too high');
        const key = await nativeScrypt(passphrase, Buffer.concat([Buffer.from(SCRYPT_LABEL), salt]), logN);
        const body = Buffer.from(stanza.body);
        const decipher = createDecipheriv('chacha20-poly1305', key, Buffer.alloc(12), { authTagLength: TAG });
        decipher.setAuthTag(body.subarray(16));
        const fileKey = decipher.update(body.subarray(0, 16));
        try {
          decipher.final();
        } catch {
          return null;
        }
        return fileKey;
      }
      return null;
    },
  };
}

export interface AgeHeader {
  header: Buffer;
  fileKey: Uint8Array;
}

const X25519_LABEL = 'age-encryption.org/v1/X25519';
const FILE_KEY = 16;

/** age's base64: the standard alphabet without padding. */
function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '');
}

/** The 32-byte X25519 public key of an age1… recipient (bech32, as age-keygen prints it). */
function recipientKey(recipient: string): KeyObject {
  const { prefix, words } = bech32.decode(recipient as `${string}1${string}`, 90);
  const bytes = bech32.fromWords(words);
  if (prefix !== 'age' || bytes.length !== 32) throw new ConfigError(`"${recipient}" is not an age X25519 recipient`);
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(bytes).toString('base64url') }, format: 'jwk' });
}

/**
 * An X25519 recipient stanza (age v1): an ephemeral key agreement with the recipient, HKDF over
 * the shared secret, and the file key sealed with ChaCha20-Poly1305 under a zero nonce. Node's
 * native X25519, HKDF and AEAD; nothing of it is implemented here beyond the format.
 */
function x25519Stanza(recipient: string, fileKey: Buffer): string {
  const their = recipientKey(recipient);
  const ephemeral = generateKeyPairSync('x25519');
  const share = Buffer.from(ephemeral.publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: their });
  if (shared.every((b) => b === 0)) throw new ConfigError(`the age recipient ${recipient} is a low-order point`);
  const theirBytes = Buffer.from(their.export({ format: 'jwk' }).x!, 'base64url');
  const wrapKey = Buffer.from(hkdfSync('sha256', shared, Buffer.concat([share, theirBytes]), X25519_LABEL, 32));
  const cipher = createCipheriv('chacha20-poly1305', wrapKey, Buffer.alloc(12), { authTagLength: TAG });
  const body = Buffer.concat([cipher.update(fileKey), cipher.final(), cipher.getAuthTag()]);
  // A 32-byte body is 43 base64 characters: one line, shorter than the 64-column wrap.
  return `-> X25519 ${b64(share)}\n${b64(body)}\n`;
}

/** The header for X25519 recipients, made with native crypto only (no library to load). */
function x25519Header(recipients: string[]): AgeHeader {
  const fileKey = randomBytes(FILE_KEY);
  const text = `age-encryption.org/v1\n${recipients.map((r) => x25519Stanza(r, fileKey)).join('')}---`;
  const macKey = Buffer.from(hkdfSync('sha256', fileKey, Buffer.alloc(0), 'header', 32));
  const mac = createHmac('sha256', macKey).update(text).digest();
  return { header: Buffer.from(`${text} ${b64(mac)}\n`), fileKey };
}

/**
 * Builds an age header for a fresh file key. X25519 recipients (the only kind checkRecipient
 * accepts) use native crypto, so an encrypted backup does not wait for the age-encryption package
 * to load; a passphrase (scrypt) header is made by that package.
 */
export async function makeAgeHeader(recipients: string[], passphrase?: string): Promise<AgeHeader> {
  if (passphrase === undefined) return x25519Header(recipients);
  const { Decrypter, Encrypter } = await loadAge();
  const encrypter = new Encrypter();
  encrypter.setPassphrase(passphrase);
  const sample = Buffer.from(await encrypter.encrypt(new Uint8Array(0)));
  const header = Buffer.from(sample.subarray(0, headerLength(sample)));
  // The package keeps the file key to itself: it is read back from the header we just made.
  const decrypter = new Decrypter();
  decrypter.addIdentity(scryptIdentity(passphrase));
  return { header, fileKey: await decrypter.decryptHeader(header) };
}

/** Encrypts a stream into the age format; the header is built once, before the first output. */
export class AgeEncryptStream extends Transform {
  private readonly queue = new ByteQueue();
  private key!: Buffer;
  private prefix?: Buffer;
  private counter = 0;

  constructor(private readonly makeHeader: () => Promise<AgeHeader>) {
    super({ highWaterMark: 1 << 20 });
  }

  override _construct(done: (err?: Error | null) => void): void {
    this.makeHeader().then(
      ({ header, fileKey }) => {
        const nonce = randomBytes(NONCE);
        this.key = payloadKey(fileKey, nonce);
        this.prefix = Buffer.concat([header, nonce]);
        done();
      },
      (err: Error) => done(err),
    );
  }

  private seal(plain: Buffer[], last: boolean, out: Buffer[]): void {
    const cipher = createCipheriv('chacha20-poly1305', this.key, chunkNonce(this.counter++, last), { authTagLength: TAG });
    for (const part of plain) out.push(cipher.update(part));
    cipher.final();
    out.push(cipher.getAuthTag());
  }

  private takePrefix(out: Buffer[]): void {
    if (this.prefix) {
      out.push(this.prefix);
      this.prefix = undefined;
    }
  }

  // Sealed chunks and tags are pushed as they are: joining them would cost a copy of every byte,
  // a third of the stage's time.
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.queue.push(chunk);
    const out: Buffer[] = [];
    this.takePrefix(out);
    // The last full chunk is held back until more data (or the end) says whether it is the last.
    while (this.queue.length > CHUNK) this.seal(this.queue.takeParts(CHUNK), false, out);
    for (const piece of out) this.push(piece);
    done();
  }

  override _flush(done: TransformCallback): void {
    const out: Buffer[] = [];
    this.takePrefix(out);
    this.seal(this.queue.takeParts(this.queue.length), true, out);
    for (const piece of out) this.push(piece);
    done();
  }
}

/** Decrypts an age stream: the header (via age-encryption), then the payload with native crypto. */
export class AgeDecryptStream extends Transform {
  private readonly queue = new ByteQueue();
  private key?: Buffer;
  private counter = 0;
  private consumed = 0;

  constructor(
    private readonly decrypter: () => Promise<Decrypter>,
    private readonly describeRecipients: string,
    /** The recipient (of those the artifact was encrypted to) whose identity was given, if any. */
    private readonly givenRecipient: () => Promise<string | undefined> = async () => undefined,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  /** Opens the next chunk (its ciphertext slices, then the tag); plaintext goes to `out`. */
  private open(size: number, last: boolean, out: Buffer[]): void {
    const sealed = this.queue.takeParts(size - TAG);
    const tag = this.queue.take(TAG);
    const decipher = createDecipheriv('chacha20-poly1305', this.key!, chunkNonce(this.counter, last), { authTagLength: TAG });
    decipher.setAuthTag(tag);
    const plain = sealed.map((part) => decipher.update(part));
    try {
      decipher.final();
    } catch {
      // A chunk authenticates its own bytes only, under the payload key, which the nonce before
      // the first chunk feeds: damage there fails chunk 0 (later chunks are read after chunk 0
      // has authenticated, so the key was right). Offsets count the age file's bytes.
      const where =
        this.counter === 0
          ? `bytes ${this.consumed - NONCE}-${this.consumed + size - 1} (the payload nonce and the chunk)`
          : `bytes ${this.consumed}-${this.consumed + size - 1}`;
      throw new IntegrityError(
        last
          ? `age payload chunk ${this.counter} does not authenticate as the last chunk: the artifact is truncated there, or damaged in ${where}`
          : `age payload chunk ${this.counter} does not authenticate: the artifact is damaged in ${where}`,
      );
    }
    this.counter++;
    this.consumed += size;
    out.push(...plain);
  }

  private async readHeader(): Promise<boolean> {
    const head = this.queue.length >= MAGIC.length ? this.peek() : undefined;
    if (head && !head.subarray(0, MAGIC.length).equals(MAGIC)) {
      const armored = head.subarray(0, 11).toString('latin1') === '-----BEGIN ';
      throw new IntegrityError(armored ? 'the artifact is ASCII-armored age; dbstash reads binary age files' : 'the artifact is not an age-encrypted file (no age v1 header)', {
        hint: armored ? 'remove the armor with `age -d` and re-encrypt without -a' : undefined,
      });
    }
    const bytes = this.peek();
    const length = headerLength(bytes);
    if (length < 0 || bytes.length < length + NONCE) {
      if (bytes.length > MAX_HEADER) throw new IntegrityError('the age header is longer than 1 MiB: the artifact is damaged');
      return false;
    }
    const header = this.queue.take(length);
    const nonce = this.queue.take(NONCE);
    let fileKey: Uint8Array;
    try {
      fileKey = await (await this.decrypter()).decryptHeader(header);
    } catch (err) {
      const message = (err as Error).message;
      if (err instanceof DecryptError) throw err;
      if (/no identity matched/i.test(message)) {
        // The identity of one of the artifact's recipients was given, yet nothing unwraps: the
        // header is damaged, not the key wrong.
        const recipient = await this.givenRecipient().catch(() => undefined);
        if (recipient) {
          throw new IntegrityError(`the age header (bytes 0-${length - 1}) does not unwrap with the identity of ${recipient}, one of the recipients it was encrypted to: the header is damaged`);
        }
        throw new DecryptError(`none of the given identities or passphrases can decrypt this backup (${this.describeRecipients})`, {
          hint: 'pass the matching --identity FILE, or the passphrase with --passphrase-file FILE or DBSTASH_PASSPHRASE',
        });
      }
      if (/HMAC/i.test(message)) throw new IntegrityError(`the age header MAC does not match: the header (bytes 0-${length - 1}) was altered`);
      throw new IntegrityError(`the age header (bytes 0-${length - 1}) is malformed: ${message}`);
    }
    this.key = payloadKey(fileKey, nonce);
    this.consumed = length + NONCE;
    return true;
  }

  private peek(): Buffer {
    const all = this.queue.takeAll();
    this.queue.push(all);
    return all;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.queue.push(chunk);
    if (this.key) return this.release(false, done);
    this.readHeader().then((ready) => (ready ? this.release(false, done) : done()), done);
  }

  override _flush(done: TransformCallback): void {
    if (this.key) return this.release(true, done);
    this.readHeader().then(
      (ready) => (ready ? this.release(true, done) : done(new IntegrityError('the artifact ends inside its age header: it is truncated'))),
      done,
    );
  }

  private release(end: boolean, done: TransformCallback): void {
    let out: Buffer[];
    try {
      out = this.openAvailable(end);
    } catch (err) {
      return done(err as Error);
    }
    for (const piece of out) this.push(piece);
    done();
  }

  private openAvailable(end: boolean): Buffer[] {
    const out: Buffer[] = [];
    while (this.queue.length > SEALED) this.open(SEALED, false, out);
    if (end) {
      const rest = this.queue.length;
      if (rest < TAG) throw new IntegrityError(`the age payload ends ${rest} bytes into a chunk: the artifact is truncated`);
      if (rest === TAG && this.counter > 0) throw new IntegrityError('the age payload ends with an empty chunk: the artifact is damaged');
      this.open(rest, true, out);
    }
    return out;
  }
}

const RECIPIENT_RE = /^age1[02-9ac-hj-np-z]{58}$/;

export function checkRecipient(r: string, where: string): string {
  const s = r.trim();
  if (!RECIPIENT_RE.test(s) || !bech32.decodeUnsafe(s, 90)) {
    throw new ConfigError(`${where}: "${s.slice(0, 20)}${s.length > 20 ? '…' : ''}" is not an age X25519 recipient (age1… , 62 characters)`, {
      hint: 'age-keygen -y KEYFILE prints the recipient of an identity; dbstash keygen --age makes a pair',
    });
  }
  return s;
}

export function ageStage(params: Record<string, unknown>, context: StageContext = {}): Stage {
  const scrypt = params.scrypt === true;
  const recipients = Array.isArray(params.recipients) ? params.recipients.map((r) => checkRecipient(String(r), 'age recipients')) : [];
  if (!scrypt && recipients.length === 0) throw new ConfigError('the age stage needs recipients or a passphrase');
  const describe = scrypt ? 'it was encrypted with a passphrase' : `it was encrypted to ${recipients.join(', ')}`;
  return {
    id: 'age',
    params: scrypt ? { scrypt: true } : { recipients },
    suffix: '.age',
    encode: () => {
      if (scrypt && context.passphrase === undefined) throw new ConfigError('a passphrase is needed to encrypt with scrypt');
      return new AgeEncryptStream(() => makeAgeHeader(recipients, scrypt ? context.passphrase : undefined));
    },
    decode: () => ageDecoder(context, describe, recipients),
  };
}

/**
 * A decrypting stream for age data, with the identities or passphrase of `context`. `describe`
 * says how the data was encrypted, for the message when no key fits; `recipients`, when known,
 * let the message name the one the given identity matches.
 */
export function ageDecoder(context: StageContext, describe = 'it is encrypted with age', recipients: string[] = []): AgeDecryptStream {
  return new AgeDecryptStream(async () => {
    const identities = context.identities ?? [];
    if (identities.length === 0 && context.passphrase === undefined) {
      throw new DecryptError(`the backup is encrypted and no identity or passphrase was given (${describe})`, {
        hint: 'pass --identity FILE (an age identity file), or --passphrase-file FILE / DBSTASH_PASSPHRASE',
      });
    }
    const { Decrypter } = await loadAge();
    const decrypter = new Decrypter();
    for (const id of identities) decrypter.addIdentity(id);
    if (context.passphrase !== undefined) decrypter.addIdentity(scryptIdentity(context.passphrase));
    return decrypter;
  }, describe, async () => {
    if (recipients.length === 0 || !context.identities?.length) return undefined;
    const { identityToRecipient } = await loadAge();
    for (const id of context.identities) {
      const recipient = await identityToRecipient(id).catch(() => undefined);
      if (recipient && recipients.includes(recipient)) return recipient;
    }
    return undefined;
  });
}

registerStage('age', ageStage);
