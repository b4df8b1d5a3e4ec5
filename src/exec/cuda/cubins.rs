//! The sm_90a cubins build.rs compiled from `kernels/*.cu` (empty when nvcc was missing).

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The cubin of `kernels/<stem>.cu`.
pub fn cubin(stem: &str) -> Option<&'static [u8]> {
    CUBINS.iter().find(|(name, _)| *name == stem).map(|(_, bytes)| *bytes)
}

/// Bytes of SASS of kernel `entry` in `kernels/<stem>.cu` (its cubin's `.text.<entry>`
/// section), `None` without that cubin or entry. A launch fetches this code cold once L2 has
/// been streamed through (the bench's flush, or a decode step's weights), at ~0.25-0.3 us per
/// KB it executes (docs/perf.md, session 16), so `kernel bench` prints it per launch.
pub fn code_bytes(stem: &str, entry: &str) -> Option<u64> {
    elf_section_size(cubin(stem)?, &format!(".text.{entry}"))
}

/// The size of section `name` of a 64-bit little-endian ELF image (what nvcc's cubins are),
/// `None` if there is no such section or the image is malformed. Read by hand: the section
/// header table is a fixed layout, and no ELF crate is in the dependency tree.
fn elf_section_size(elf: &[u8], name: &str) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // e_ident: magic, class 2 (64-bit), data 1 (little-endian).
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize) = (usize::try_from(u64_at(0x28)?).ok()?, usize::from(u16_at(0x3A)?));
    let (shnum, shstrndx) = (usize::from(u16_at(0x3C)?), usize::from(u16_at(0x3E)?));
    // Section header i: sh_name (u32) at 0, sh_offset (u64) at 0x18, sh_size (u64) at 0x20.
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let names = usize::try_from(u64_at(header(shstrndx)? + 0x18)?).ok()?;
    (0..shnum).find_map(|i| {
        let h = header(i)?;
        let start = names.checked_add(usize::try_from(u32_at(h)?).ok()?)?;
        let len = elf.get(start..)?.iter().position(|&b| b == 0)?;
        (&elf[start..start + len] == name.as_bytes()).then(|| u64_at(h + 0x20)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 image: a null section, `.text.k` of `size` bytes, and `.shstrtab`.
    fn image(size: u64) -> Vec<u8> {
        let names = b"\0.text.k\0.shstrtab\0";
        let (names_at, shoff) = (64usize, 64 + names.len());
        let mut elf = vec![0u8; shoff + 3 * 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf[names_at..names_at + names.len()].copy_from_slice(names);
        let mut section = |i: usize, name: u32, offset: u64, len: u64| {
            let h = shoff + i * 64;
            elf[h..h + 4].copy_from_slice(&name.to_le_bytes());
            elf[h + 0x18..h + 0x20].copy_from_slice(&offset.to_le_bytes());
            elf[h + 0x20..h + 0x28].copy_from_slice(&len.to_le_bytes());
        };
        section(1, 1, 0, size);
        section(2, 9, names_at as u64, names.len() as u64);
        elf
    }

    #[test]
    fn section_sizes_are_read_from_the_section_headers() {
        let elf = image(26_624);
        assert_eq!(elf_section_size(&elf, ".text.k"), Some(26_624));
        assert_eq!(elf_section_size(&elf, ".text"), None);
        assert_eq!(elf_section_size(&elf, ".text.kk"), None);
        // Truncated or not an ELF64 LE image: no size, no panic.
        assert_eq!(elf_section_size(&elf[..100], ".text.k"), None);
        assert_eq!(elf_section_size(b"\x7fELF\x01\x01", ".text.k"), None);
        assert_eq!(elf_section_size(&[], ".text.k"), None);
    }

    #[test]
    fn built_cubins_have_their_entries() {
        // Only where build.rs had nvcc (CI installs it); without it there are no cubins.
        if cubin("misc").is_some() {
            assert!(code_bytes("misc", "l2_flush_read").is_some_and(|b| b > 0));
            assert!(code_bytes("moe", "moe_align").is_some_and(|b| b > 4096));
            assert_eq!(code_bytes("misc", "no_such_kernel"), None);
        }
        assert_eq!(code_bytes("no_such_module", "moe_align"), None);
    }
}
