//! DC-09 encryption: AES-128/192/256-CBC, zero IV, ciphertext as uppercase hex.
//!
//! The plaintext is `pad | rest`: `rest` is everything after the data block's opening `[`
//! (data, `]`, extended data, `_timestamp`); the pad makes `pad + "|" + rest` a whole
//! number of 16-byte blocks, a whole extra block when it already is, and never holds `|`,
//! `[` or `]` (PROTOCOLS §2, R9 citing DC-09 §5.4.4.2). The pad's bytes come from the
//! caller ([`PadSource`]) so that this crate stays pure and tests deterministic; a
//! transmitter passes a random source.

use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, BlockSizeUser,
    KeyInit, KeyIvInit,
};

use crate::Dc09Error;

/// AES block size; the DC-09 IV is this many zero bytes.
pub const BLOCK: usize = 16;
const ZERO_IV: [u8; BLOCK] = [0; BLOCK];

/// How a configured key string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEncoding {
    /// The string's ASCII bytes are the key (16, 24 or 32 characters), as pysiaalarm and
    /// fioletoven/dc09 use it.
    #[default]
    Text,
    /// The string is the key in hex (32, 48 or 64 digits), as many panels display it.
    Hex,
}

/// An AES key for one account. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(AES-{}, redacted)", self.0.len() * 8)
    }
}

impl Key {
    /// A key from raw bytes.
    ///
    /// # Errors
    /// [`Dc09Error::Key`] unless there are 16, 24 or 32 of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, Dc09Error> {
        match bytes.len() {
            16 | 24 | 32 => Ok(Key(bytes.to_vec())),
            _ => Err(Dc09Error::Key("an AES key has 16, 24 or 32 bytes")),
        }
    }

    /// A key from its configured string.
    ///
    /// # Errors
    /// [`Dc09Error::Key`] for text that is not 16/24/32 ASCII characters, or hex that is not
    /// 32/48/64 hex digits.
    pub fn parse(s: &str, encoding: KeyEncoding) -> Result<Key, Dc09Error> {
        match encoding {
            KeyEncoding::Text if !s.is_ascii() => Err(Dc09Error::Key("a text key is ASCII")),
            KeyEncoding::Text => Key::from_bytes(s.as_bytes())
                .map_err(|_| Dc09Error::Key("a text key has 16, 24 or 32 characters")),
            KeyEncoding::Hex => {
                let bytes = hex_decode(s.as_bytes()).ok_or(Dc09Error::Key(
                    "a hex key has only hex digits, two per byte",
                ))?;
                Key::from_bytes(&bytes)
                    .map_err(|_| Dc09Error::Key("a hex key has 32, 48 or 64 hex digits"))
            }
        }
    }

    /// Key length in bits: 128, 192 or 256.
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }

    /// Encrypts whole blocks (the length must be a multiple of [`BLOCK`]).
    fn encrypt(&self, data: &mut [u8]) -> Result<(), Dc09Error> {
        match self.0.len() {
            16 => cbc_encrypt::<aes::Aes128>(&self.0, data),
            24 => cbc_encrypt::<aes::Aes192>(&self.0, data),
            _ => cbc_encrypt::<aes::Aes256>(&self.0, data),
        }
    }

    fn decrypt(&self, data: &mut [u8]) -> Result<(), Dc09Error> {
        match self.0.len() {
            16 => cbc_decrypt::<aes::Aes128>(&self.0, data),
            24 => cbc_decrypt::<aes::Aes192>(&self.0, data),
            _ => cbc_decrypt::<aes::Aes256>(&self.0, data),
        }
    }
}

fn cbc_encrypt<C>(key: &[u8], data: &mut [u8]) -> Result<(), Dc09Error>
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16> + KeyInit,
{
    let mut mode = cbc::Encryptor::<C>::new_from_slices(key, &ZERO_IV)
        .map_err(|_| Dc09Error::Key("an AES key has 16, 24 or 32 bytes"))?;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let mut block =
            aes::Block::try_from(&*chunk).map_err(|_| Dc09Error::Decrypt("partial block"))?;
        mode.encrypt_block(&mut block);
        chunk.copy_from_slice(&block);
    }
    Ok(())
}

fn cbc_decrypt<C>(key: &[u8], data: &mut [u8]) -> Result<(), Dc09Error>
where
    C: BlockCipherDecrypt + BlockSizeUser<BlockSize = U16> + KeyInit,
{
    let mut mode = cbc::Decryptor::<C>::new_from_slices(key, &ZERO_IV)
        .map_err(|_| Dc09Error::Key("an AES key has 16, 24 or 32 bytes"))?;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let mut block =
            aes::Block::try_from(&*chunk).map_err(|_| Dc09Error::Decrypt("partial block"))?;
        mode.decrypt_block(&mut block);
        chunk.copy_from_slice(&block);
    }
    Ok(())
}

/// Where the pad characters of an encrypted message come from.
///
/// Bytes that are not allowed in a pad (outside printable ASCII, or `|`, `[`, `]`), and
/// `#`, are mapped onto letters and digits, so any byte source works; a source that yields
/// other characters (such as [`FixedPad`] with a decoded pad) is reproduced exactly.
pub trait PadSource {
    /// Fills `buf` with pad bytes.
    fn fill(&mut self, buf: &mut [u8]);

    /// Whether the bytes are to be written as they are wherever a receiver accepts them
    /// (a decoded pad being re-encoded) rather than mapped onto printable characters.
    fn verbatim(&self) -> bool {
        false
    }
}

impl<F: FnMut(&mut [u8])> PadSource for F {
    fn fill(&mut self, buf: &mut [u8]) {
        self(buf);
    }
}

/// A pad source that repeats the given bytes: for tests and for re-encoding a decoded
/// message byte for byte.
#[derive(Debug, Clone)]
pub struct FixedPad(pub Vec<u8>);

impl PadSource for FixedPad {
    fn verbatim(&self) -> bool {
        true
    }

    fn fill(&mut self, buf: &mut [u8]) {
        if self.0.is_empty() {
            buf.fill(b'0');
            return;
        }
        for (b, p) in buf.iter_mut().zip(self.0.iter().cycle()) {
            *b = *p;
        }
    }
}

const PAD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn pad_char(b: u8) -> u8 {
    if is_written_pad_char(b) {
        b
    } else {
        PAD_ALPHABET[usize::from(b) % PAD_ALPHABET.len()]
    }
}

/// Whether `b` may appear in a pad: printable ASCII except `|`, `[` and `]`.
pub fn is_pad_char(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && !matches!(b, b'|' | b'[' | b']')
}

/// Whether a received pad may hold `b`: any ASCII byte except `|`, `[` and `]`. dc09_spt
/// 0.0.4 draws its pad from `chr(20..=125)`, control characters included; the pad carries
/// no meaning, so a receiver has no reason to refuse them.
pub fn is_received_pad_char(b: u8) -> bool {
    b < 0x7f && !matches!(b, b'|' | b'[' | b']')
}

/// Whether our encoder writes `b` in a pad: a pad character other than `#`, so that a pad
/// can never look like the `#acct|` that starts the data (see [`open`]).
fn is_written_pad_char(b: u8) -> bool {
    is_pad_char(b) && b != b'#'
}

/// The pad length for a `rest` of `rest_len` bytes: 1-16, so that `pad + "|" + rest` fills
/// whole blocks, a whole block when it already would.
pub fn pad_len(rest_len: usize) -> usize {
    BLOCK - (rest_len + 1) % BLOCK
}

/// Encrypts `rest` (the data block's contents after `[` to the end of the message):
/// returns the uppercase hex ciphertext of `pad | rest`.
///
/// # Errors
/// [`Dc09Error::Key`] only if the key is unusable (cannot happen for a [`Key`]).
pub fn seal(key: &Key, rest: &[u8], pad: &mut dyn PadSource) -> Result<String, Dc09Error> {
    let n = pad_len(rest.len());
    let mut buf = vec![0u8; n];
    pad.fill(&mut buf);
    if pad.verbatim() {
        // A decoded pad is written back as received (`#` is still mapped, see above).
        buf.iter_mut()
            .filter(|b| !is_received_pad_char(**b) || **b == b'#')
            .for_each(|b| *b = pad_char(*b));
    } else {
        buf.iter_mut().for_each(|b| *b = pad_char(*b));
    }
    buf.push(b'|');
    buf.extend_from_slice(rest);
    key.encrypt(&mut buf)?;
    Ok(hex_encode(&buf))
}

/// Decrypts hex ciphertext; returns `(pad, rest)`.
///
/// The pad normally ends at the first `|`. pysiaalarm 3.2.2 writes its encrypted replies
/// without the `|`, padding with `0`s (`zfill`) straight up to the data, so when the
/// part before the first `|` holds `#` and an account, or there is no `|` at all, the pad
/// ends where the data begins (`#acct` or the `]` of an empty data block).
///
/// # Errors
/// [`Dc09Error::Decrypt`] if the hex is not whole blocks, the text after the pad is not
/// printable ASCII, or the pad holds `|`, `[`, `]` or non-ASCII (the usual signs of a wrong
/// key; control characters in the pad are accepted, see [`is_received_pad_char`]).
pub fn open(key: &Key, hex: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Dc09Error> {
    if hex.is_empty() || !hex.len().is_multiple_of(2 * BLOCK) {
        return Err(Dc09Error::Decrypt(
            "ciphertext is not whole 16-byte blocks of hex",
        ));
    }
    let mut buf = hex_decode(hex).ok_or(Dc09Error::Decrypt("ciphertext is not hex"))?;
    key.decrypt(&mut buf)?;
    let (pad_end, rest_start) =
        split_pad(&buf).ok_or(Dc09Error::Decrypt("no '|' after the pad (wrong key?)"))?;
    let (pad, rest) = (
        buf.get(..pad_end).unwrap_or_default(),
        buf.get(rest_start..).unwrap_or_default(),
    );
    if !rest.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(Dc09Error::Decrypt(
            "plaintext is not printable ASCII (wrong key?)",
        ));
    }
    if !pad.iter().all(|b| is_received_pad_char(*b)) {
        return Err(Dc09Error::Decrypt("pad holds forbidden bytes (wrong key?)"));
    }
    Ok((pad.to_vec(), rest.to_vec()))
}

/// Where the pad ends and the rest starts: `(end of pad, start of rest)`.
fn split_pad(plain: &[u8]) -> Option<(usize, usize)> {
    let data_start = |upto: usize| {
        let head = plain.get(..upto)?;
        let hash = head.iter().position(|b| *b == b'#')?;
        let acct = plain.get(hash + 1..)?;
        let n = acct.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        ((3..=16).contains(&n) && acct.get(n) == Some(&b'|')).then_some(hash)
    };
    match plain.iter().position(|b| *b == b'|') {
        Some(bar) => match data_start(bar) {
            Some(hash) => Some((hash, hash)),
            None => Some((bar, bar + 1)),
        },
        None => plain.iter().position(|b| *b == b']').map(|end| (end, end)),
    }
}

/// Uppercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Bytes of a hex string (either case); `None` for odd length or a non-hex digit.
pub(crate) fn hex_decode(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    hex.chunks_exact(2)
        .map(|p| Some(digit(*p.first()?)? << 4 | digit(*p.get(1)?)?))
        .collect()
}
