//! bbolt files, the format of etcd's backend and of its snapshots, written and read
//! without Go.
//!
//! A bbolt file is a copy-on-write B+tree of 4 KiB pages: two meta pages (0 and 1,
//! the valid one with the higher transaction ID wins), a freelist page, and for each
//! bucket a tree of branch and leaf pages, all reached from the root bucket's tree.
//! A page whose elements do not fit in 4 KiB runs on over the pages after it
//! (its `overflow` count). Every integer is little-endian.
//!
//! [`BoltWriter`] builds a file from buckets given in any order and keys given in
//! order, streaming leaf pages to disk as they fill: memory holds one page and the
//! first key of each page (a branch level). [`BoltReader`] walks a file page by page,
//! so reading a large snapshot needs no more memory than its biggest page.
//!
//! **Invariant:** a file written here passes bbolt's own `Tx.Check` (every page below
//! the high-water mark reached once, or free), and the reader returns what bbolt's
//! cursor would, or an error for a page that is out of bounds, mislabelled or cut off.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// bbolt's page size here, as etcd uses it on Linux (the OS page size).
pub const PAGE_SIZE: usize = 4096;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
/// A leaf element whose value is a nested bucket.
const BUCKET_ELEMENT: u32 = 0x01;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
const FREELIST_ID: u64 = 2;
/// Deeper trees than this cannot come from a real file: a cycle of pages.
const MAX_DEPTH: usize = 64;

/// Why a bbolt file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoltError {
    /// The file could not be read or written.
    #[error("bbolt: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid bbolt file; the text says where.
    #[error("bbolt: invalid database: {0}")]
    Invalid(String),
    /// A bucket's keys were not given in strictly increasing order.
    #[error("bbolt: keys of bucket {0:?} are not in increasing order")]
    Unsorted(String),
}

fn invalid(why: impl Into<String>) -> BoltError {
    BoltError::Invalid(why.into())
}

/// One page's elements, encoded: a leaf's key/value pairs or a branch's keys with
/// their child pages.
struct PageBuilder {
    flags: u16,
    elements: Vec<(Vec<u8>, Vec<u8>, u64, u32)>,
    size: usize,
}

impl PageBuilder {
    fn new(flags: u16) -> Self {
        Self { flags, elements: Vec::new(), size: HEADER }
    }

    fn fits(&self, key: &[u8], value_len: usize) -> bool {
        self.elements.is_empty() || self.size + ELEMENT + key.len() + value_len <= PAGE_SIZE
    }

    fn push(&mut self, key: Vec<u8>, value: Vec<u8>, child: u64, element_flags: u32) {
        self.size += ELEMENT + key.len() + value.len();
        self.elements.push((key, value, child, element_flags));
    }

    /// The page as bytes for page `id`, padded to whole pages.
    fn encode(&self, id: u64) -> Vec<u8> {
        let pages = self.size.div_ceil(PAGE_SIZE).max(1);
        let mut page = vec![0u8; pages * PAGE_SIZE];
        page[0..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&self.flags.to_le_bytes());
        let count = u16::try_from(self.elements.len()).expect("a page holds under 65536 elements");
        page[10..12].copy_from_slice(&count.to_le_bytes());
        page[12..16].copy_from_slice(&(pages as u32 - 1).to_le_bytes());
        let mut data = HEADER + ELEMENT * self.elements.len();
        for (i, (key, value, child, element_flags)) in self.elements.iter().enumerate() {
            let at = HEADER + ELEMENT * i;
            let pos = (data - at) as u32;
            let element = &mut page[at..at + ELEMENT];
            if self.flags == BRANCH_PAGE {
                element[0..4].copy_from_slice(&pos.to_le_bytes());
                element[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
                element[8..16].copy_from_slice(&child.to_le_bytes());
            } else {
                element[0..4].copy_from_slice(&element_flags.to_le_bytes());
                element[4..8].copy_from_slice(&pos.to_le_bytes());
                element[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
                element[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
            }
            page[data..data + key.len()].copy_from_slice(key);
            data += key.len();
            page[data..data + value.len()].copy_from_slice(value);
            data += value.len();
        }
        page
    }
}

/// Writes a bbolt file: buckets one after the other, each with its keys in order,
/// then [`BoltWriter::finish`] writes the root and the meta pages.
pub struct BoltWriter<F: Write + Seek> {
    file: F,
    next_page: u64,
    buckets: Vec<(Vec<u8>, u64)>,
}

impl<F: Write + Seek> BoltWriter<F> {
    /// Starts a file in `file`, which should be empty.
    ///
    /// # Errors
    ///
    /// [`BoltError::Io`] if `file` cannot be written.
    pub fn new(mut file: F) -> Result<Self, BoltError> {
        let freelist = PageBuilder::new(FREELIST_PAGE).encode(FREELIST_ID);
        file.seek(SeekFrom::Start(FREELIST_ID * PAGE_SIZE as u64))?;
        file.write_all(&freelist)?;
        Ok(Self { file, next_page: FREELIST_ID + 1, buckets: Vec::new() })
    }

    /// Starts a bucket named `name`; its keys go in with [`BucketWriter::put`].
    pub fn bucket(&mut self, name: &[u8]) -> BucketWriter<'_, F> {
        BucketWriter {
            name: name.to_vec(),
            writer: self,
            page: PageBuilder::new(LEAF_PAGE),
            level: Vec::new(),
            last: None,
        }
    }

    fn write_page(&mut self, page: &PageBuilder) -> Result<u64, BoltError> {
        let id = self.next_page;
        let bytes = page.encode(id);
        self.file.write_all(&bytes)?;
        self.next_page += (bytes.len() / PAGE_SIZE) as u64;
        Ok(id)
    }

    /// Writes the branch levels above `level` (each page's first key and ID), giving
    /// the root page.
    fn build_tree(&mut self, mut level: Vec<(Vec<u8>, u64)>) -> Result<u64, BoltError> {
        while level.len() > 1 {
            let mut parents = Vec::new();
            let mut page = PageBuilder::new(BRANCH_PAGE);
            for (key, child) in level {
                if !page.fits(&key, 0) {
                    let first = page.elements[0].0.clone();
                    parents.push((first, self.write_page(&page)?));
                    page = PageBuilder::new(BRANCH_PAGE);
                }
                page.push(key, Vec::new(), child, 0);
            }
            let first = page.elements[0].0.clone();
            parents.push((first, self.write_page(&page)?));
            level = parents;
        }
        Ok(level[0].1)
    }

    /// Writes the root bucket and both meta pages, and gives back the file, flushed
    /// (syncing it is the caller's choice). The file is [`PAGE_SIZE`] times the page
    /// count long.
    ///
    /// # Errors
    ///
    /// [`BoltError::Io`] if `file` cannot be written.
    pub fn finish(mut self) -> Result<F, BoltError> {
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort();
        let mut root = self.bucket(b"");
        for (name, page) in buckets {
            let mut header = page.to_le_bytes().to_vec();
            header.extend_from_slice(&0u64.to_le_bytes());
            root.push(name, header, BUCKET_ELEMENT)?;
        }
        let root_page = root.write_tree()?;
        for (page, txid) in [(0u64, 2u64), (1, 1)] {
            let mut bytes = vec![0u8; PAGE_SIZE];
            bytes[0..8].copy_from_slice(&page.to_le_bytes());
            bytes[8..10].copy_from_slice(&META_PAGE.to_le_bytes());
            let meta = &mut bytes[HEADER..HEADER + 64];
            meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            meta[4..8].copy_from_slice(&VERSION.to_le_bytes());
            meta[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
            meta[16..24].copy_from_slice(&root_page.to_le_bytes());
            meta[32..40].copy_from_slice(&FREELIST_ID.to_le_bytes());
            meta[40..48].copy_from_slice(&self.next_page.to_le_bytes());
            meta[48..56].copy_from_slice(&txid.to_le_bytes());
            let checksum = fnv1a64(&meta[..56]);
            meta[56..64].copy_from_slice(&checksum.to_le_bytes());
            self.file.seek(SeekFrom::Start(page * PAGE_SIZE as u64))?;
            self.file.write_all(&bytes)?;
        }
        self.file.seek(SeekFrom::Start(self.next_page * PAGE_SIZE as u64))?;
        self.file.flush()?;
        Ok(self.file)
    }
}

/// One bucket being written: keys in strictly increasing order.
pub struct BucketWriter<'a, F: Write + Seek> {
    name: Vec<u8>,
    writer: &'a mut BoltWriter<F>,
    page: PageBuilder,
    level: Vec<(Vec<u8>, u64)>,
    last: Option<Vec<u8>>,
}

impl<F: Write + Seek> BucketWriter<'_, F> {
    /// Adds `key` with `value`.
    ///
    /// # Errors
    ///
    /// [`BoltError::Unsorted`] if `key` is not above the previous one;
    /// [`BoltError::Io`] if a full page cannot be written.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BoltError> {
        self.push(key.to_vec(), value.to_vec(), 0)
    }

    fn push(&mut self, key: Vec<u8>, value: Vec<u8>, flags: u32) -> Result<(), BoltError> {
        if self.last.as_ref().is_some_and(|last| *last >= key) {
            return Err(BoltError::Unsorted(String::from_utf8_lossy(&self.name).into_owned()));
        }
        if !self.page.fits(&key, value.len()) {
            self.flush()?;
        }
        self.last = Some(key.clone());
        self.page.push(key, value, 0, flags);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BoltError> {
        let first = self.page.elements[0].0.clone();
        let id = self.writer.write_page(&self.page)?;
        self.level.push((first, id));
        self.page = PageBuilder::new(LEAF_PAGE);
        Ok(())
    }

    fn write_tree(&mut self) -> Result<u64, BoltError> {
        if !self.page.elements.is_empty() || self.level.is_empty() {
            let first = self.page.elements.first().map(|e| e.0.clone()).unwrap_or_default();
            let id = self.writer.write_page(&self.page)?;
            self.level.push((first, id));
        }
        let level = std::mem::take(&mut self.level);
        self.writer.build_tree(level)
    }

    /// Ends the bucket, writing the pages above its leaves.
    ///
    /// # Errors
    ///
    /// [`BoltError::Io`] if a page cannot be written.
    pub fn finish(mut self) -> Result<(), BoltError> {
        let root = self.write_tree()?;
        let name = std::mem::take(&mut self.name);
        self.writer.buckets.push((name, root));
        Ok(())
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A meta page's fields that a reader needs.
#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: u64,
    root: u64,
    freelist: u64,
    pages: u64,
    txid: u64,
}

fn read_meta(file: &File, offset: u64) -> Result<Meta, BoltError> {
    let mut bytes = [0u8; HEADER + 64];
    file.read_exact_at(&mut bytes, offset)?;
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let meta = &bytes[HEADER..];
    if u16::from_le_bytes([bytes[8], bytes[9]]) != META_PAGE || u32_at(HEADER) != MAGIC {
        return Err(invalid("not a bbolt file (no meta page)"));
    }
    if u32_at(HEADER + 4) != VERSION {
        return Err(invalid(format!("unsupported version {}", u32_at(HEADER + 4))));
    }
    if u64_at(HEADER + 56) != fnv1a64(&meta[..56]) {
        return Err(invalid("meta page checksum mismatch"));
    }
    let page_size = u64::from(u32_at(HEADER + 8));
    if !(1024..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(invalid(format!("page size {page_size}")));
    }
    Ok(Meta {
        page_size,
        root: u64_at(HEADER + 16),
        freelist: u64_at(HEADER + 32),
        pages: u64_at(HEADER + 40),
        txid: u64_at(HEADER + 48),
    })
}

fn slice(page: &[u8], start: usize, len: usize) -> Result<&[u8], BoltError> {
    start
        .checked_add(len)
        .and_then(|end| page.get(start..end))
        .ok_or_else(|| invalid("an element runs past its page"))
}

fn u32_in(page: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_in(page: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"))
}

/// One element of a page: a leaf's key, value and flags, or a branch's key and child.
enum Element<'a> {
    Leaf { key: &'a [u8], value: &'a [u8], flags: u32 },
    Branch { child: u64 },
}

/// The elements of `page`.
fn elements(page: &[u8]) -> Result<Vec<Element<'_>>, BoltError> {
    if page.len() < HEADER {
        return Err(invalid("a page shorter than its header"));
    }
    let flags = u16::from_le_bytes([page[8], page[9]]);
    let count = usize::from(u16::from_le_bytes([page[10], page[11]]));
    if HEADER + count * ELEMENT > page.len() {
        return Err(invalid(format!("page {}: {count} elements do not fit", u64_in(page, 0))));
    }
    let mut elements = Vec::with_capacity(count);
    for i in 0..count {
        let at = HEADER + i * ELEMENT;
        elements.push(match flags {
            LEAF_PAGE => {
                let start = at + u32_in(page, at + 4) as usize;
                let key_len = u32_in(page, at + 8) as usize;
                let value_len = u32_in(page, at + 12) as usize;
                Element::Leaf {
                    key: slice(page, start, key_len)?,
                    value: slice(page, start + key_len, value_len)?,
                    flags: u32_in(page, at),
                }
            }
            BRANCH_PAGE => Element::Branch { child: u64_in(page, at + 8) },
            other => return Err(invalid(format!("page {}: invalid type {other:#x}", u64_in(page, 0)))),
        });
    }
    Ok(elements)
}

/// What a walk calls with each leaf element: key, value and element flags.
type Visit<'a, E> = dyn FnMut(&[u8], &[u8], u32) -> Result<(), E> + 'a;

/// A bbolt file opened for reading, as of its newest valid meta page.
pub struct BoltReader {
    file: File,
    meta: Meta,
    /// Pages read by the walk in progress: more than the file holds means pages
    /// reached twice (a damaged tree), which would otherwise take exponential time.
    walked: std::cell::Cell<u64>,
}

impl BoltReader {
    /// Opens the bbolt file at `path`. Bytes after its last page (a snapshot's
    /// trailing hash) are ignored.
    ///
    /// # Errors
    ///
    /// [`BoltError::Invalid`] when neither meta page is valid or the file is shorter
    /// than its pages; [`BoltError::Io`] when it cannot be read.
    pub fn open(path: &Path) -> Result<Self, BoltError> {
        let file = File::open(path)?;
        let first = read_meta(&file, 0);
        let page_size = first.as_ref().map_or(PAGE_SIZE as u64, |meta| meta.page_size);
        let second = read_meta(&file, page_size);
        let meta = match (first, second) {
            (Ok(a), Ok(b)) => {
                if a.txid >= b.txid {
                    a
                } else {
                    b
                }
            }
            (Ok(meta), Err(_)) | (Err(_), Ok(meta)) => meta,
            (Err(error), Err(_)) => return Err(error),
        };
        let needed = meta.pages.checked_mul(meta.page_size).ok_or_else(|| invalid("page count"))?;
        if file.metadata()?.len() < needed || meta.pages < 3 {
            return Err(invalid(format!("the file is shorter than its {} pages", meta.pages)));
        }
        Ok(Self { file, meta, walked: std::cell::Cell::new(0) })
    }

    /// The size bbolt reports (`Tx.Size`): pages times page size.
    pub fn size(&self) -> u64 {
        self.meta.pages * self.meta.page_size
    }

    fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        if id < 2 || id >= self.meta.pages {
            return Err(invalid(format!("page {id}: out of bounds: {}", self.meta.pages)));
        }
        let size = self.meta.page_size as usize;
        let mut page = vec![0u8; size];
        self.file.read_exact_at(&mut page, id * self.meta.page_size)?;
        if u64_in(&page, 0) != id {
            return Err(invalid(format!("page {id}: holds page {}", u64_in(&page, 0))));
        }
        let overflow = u64::from(u32_in(&page, 12));
        if id + overflow >= self.meta.pages {
            return Err(invalid(format!("page {id}: overflows past the last page")));
        }
        if overflow > 0 {
            page.resize(size * (overflow as usize + 1), 0);
            self.file.read_exact_at(&mut page[size..], (id + 1) * self.meta.page_size)?;
        }
        Ok(page)
    }

    /// Calls `visit` with each leaf element of the tree at `page`, in key order.
    fn walk<E: From<BoltError>>(&self, page: &[u8], depth: usize, visit: &mut Visit<'_, E>) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(invalid("a tree deeper than any real one (a cycle of pages)").into());
        }
        if depth == 0 {
            self.walked.set(0);
        }
        for element in elements(page)? {
            match element {
                Element::Leaf { key, value, flags } => visit(key, value, flags)?,
                Element::Branch { child } => {
                    self.walked.set(self.walked.get() + 1);
                    if self.walked.get() > self.meta.pages {
                        return Err(invalid("pages reached more than once (a damaged tree)").into());
                    }
                    self.walk(&self.page(child)?, depth + 1, visit)?;
                }
            }
        }
        Ok(())
    }

    /// The names of the top-level buckets, in order.
    ///
    /// # Errors
    ///
    /// [`BoltError`] for a page that cannot be read or is not valid.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, BoltError> {
        let mut names = Vec::new();
        self.walk(&self.page(self.meta.root)?, 0, &mut |key, _, flags| {
            if flags & BUCKET_ELEMENT != 0 {
                names.push(key.to_vec());
            }
            Ok::<_, BoltError>(())
        })?;
        Ok(names)
    }

    /// Calls `visit` with each key and value of bucket `name`, in key order (nothing
    /// for a bucket the file does not have; nested buckets are skipped).
    ///
    /// # Errors
    ///
    /// [`BoltError`] for a page that cannot be read or is not valid, or what `visit`
    /// returns.
    pub fn for_each<E: From<BoltError>>(
        &self,
        name: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut header = None;
        self.walk(&self.page(self.meta.root)?, 0, &mut |key, value, flags| {
            if key == name && flags & BUCKET_ELEMENT != 0 {
                header = Some(value.to_vec());
            }
            Ok::<_, BoltError>(())
        })?;
        let Some(header) = header else { return Ok(()) };
        if header.len() < 16 {
            return Err(invalid("a bucket header shorter than 16 bytes").into());
        }
        let root = u64_in(&header, 0);
        let page = if root == 0 { header[16..].to_vec() } else { self.page(root)? };
        self.walk(&page, 0, &mut |key, value, flags| {
            if flags & BUCKET_ELEMENT == 0 {
                visit(key, value)?;
            }
            Ok(())
        })
    }

    /// bbolt's `Tx.Check`: every page below the high-water mark is reached exactly
    /// once from the root, or is free. The errors found, as bbolt words them.
    ///
    /// # Errors
    ///
    /// [`BoltError::Io`] if the file cannot be read.
    pub fn check(&self) -> Result<Vec<String>, BoltError> {
        let mut seen = vec![false; self.meta.pages as usize];
        let mut errors = Vec::new();
        seen[0] = true;
        seen[1] = true;
        let mut free = Vec::new();
        if self.meta.freelist != u64::MAX {
            match self.page(self.meta.freelist) {
                Ok(page) => {
                    let mut count = usize::from(u16::from_le_bytes([page[10], page[11]]));
                    let mut at = HEADER;
                    if count == 0xFFFF {
                        count = u64_in(&page, HEADER) as usize;
                        at += 8;
                    }
                    let fits = page.len().saturating_sub(at) / 8;
                    if count > fits {
                        errors.push(format!("freelist: {count} pages listed, room for {fits}"));
                        count = fits;
                    }
                    for i in 0..count {
                        let id = &page[at + 8 * i..at + 8 * i + 8];
                        free.push(u64::from_le_bytes(id.try_into().expect("8 bytes")));
                    }
                    self.mark(self.meta.freelist, &page, &mut seen, &mut errors);
                }
                Err(BoltError::Io(error)) => return Err(BoltError::Io(error)),
                Err(error) => errors.push(error.to_string()),
            }
        }
        self.mark_tree(self.meta.root, &mut seen, &mut errors, 0)?;
        for id in &free {
            match seen.get_mut(*id as usize) {
                Some(true) => errors.push(format!("page {id}: already freed")),
                Some(slot) => *slot = true,
                None => errors.push(format!("page {id}: out of bounds: {}", self.meta.pages)),
            }
        }
        if self.meta.freelist != u64::MAX {
            for (id, _) in seen.iter().enumerate().filter(|(_, seen)| !**seen) {
                errors.push(format!("page {id}: unreachable unfreed"));
            }
        }
        Ok(errors)
    }

    fn mark(&self, id: u64, page: &[u8], seen: &mut [bool], errors: &mut Vec<String>) {
        let pages = page.len() as u64 / self.meta.page_size;
        for at in id..id + pages {
            if std::mem::replace(&mut seen[at as usize], true) {
                errors.push(format!("page {at}: multiple references"));
            }
        }
    }

    fn mark_tree(
        &self,
        id: u64,
        seen: &mut [bool],
        errors: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), BoltError> {
        let page = match self.page(id) {
            Ok(page) => page,
            Err(BoltError::Io(error)) => return Err(BoltError::Io(error)),
            Err(error) => {
                errors.push(error.to_string());
                return Ok(());
            }
        };
        if seen[id as usize] {
            errors.push(format!("page {id}: multiple references"));
            return Ok(());
        }
        self.mark(id, &page, seen, errors);
        if depth > MAX_DEPTH {
            errors.push(format!("page {id}: a tree deeper than any real one"));
            return Ok(());
        }
        let elements = match elements(&page) {
            Ok(elements) => elements,
            Err(error) => {
                errors.push(error.to_string());
                return Ok(());
            }
        };
        for element in elements {
            match element {
                Element::Branch { child } => self.mark_tree(child, seen, errors, depth + 1)?,
                Element::Leaf { value, flags, .. } if flags & BUCKET_ELEMENT != 0 && value.len() >= 16 => {
                    let root = u64_in(value, 0);
                    if root != 0 {
                        self.mark_tree(root, seen, errors, depth + 1)?;
                    }
                }
                Element::Leaf { .. } => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn write(buckets: &[(&str, Entries)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut writer = BoltWriter::new(File::create(&path).unwrap()).unwrap();
        for (name, entries) in buckets {
            let mut bucket = writer.bucket(name.as_bytes());
            for (key, value) in entries {
                bucket.put(key, value).unwrap();
            }
            bucket.finish().unwrap();
        }
        writer.finish().unwrap();
        (dir, path)
    }

    fn read_all(reader: &BoltReader, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries = Vec::new();
        reader
            .for_each(name.as_bytes(), |key, value| {
                entries.push((key.to_vec(), value.to_vec()));
                Ok::<_, BoltError>(())
            })
            .unwrap();
        entries
    }

    #[test]
    fn what_is_written_reads_back_through_branches_and_overflow_pages() {
        let many: Vec<_> =
            (0u32..20_000).map(|i| (i.to_be_bytes().to_vec(), format!("value {i}").into_bytes())).collect();
        let big = vec![(b"big".to_vec(), vec![7u8; 3 * PAGE_SIZE + 5]), (b"small".to_vec(), b"s".to_vec())];
        let (_dir, path) = write(&[("zeta", many.clone()), ("alpha", big.clone()), ("empty", Vec::new())]);
        let reader = BoltReader::open(&path).unwrap();
        assert_eq!(reader.buckets().unwrap(), [b"alpha".to_vec(), b"empty".to_vec(), b"zeta".to_vec()]);
        assert_eq!(read_all(&reader, "zeta"), many);
        assert_eq!(read_all(&reader, "alpha"), big);
        assert!(read_all(&reader, "empty").is_empty());
        assert!(read_all(&reader, "missing").is_empty());
        assert_eq!(reader.check().unwrap(), Vec::<String>::new());
        assert_eq!(reader.size(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(reader.size() % PAGE_SIZE as u64, 0);
    }

    #[test]
    fn keys_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = BoltWriter::new(File::create(dir.path().join("db")).unwrap()).unwrap();
        let mut bucket = writer.bucket(b"key");
        bucket.put(b"b", b"").unwrap();
        assert!(matches!(bucket.put(b"a", b""), Err(BoltError::Unsorted(_))));
        assert!(matches!(bucket.put(b"b", b""), Err(BoltError::Unsorted(_))));
    }

    #[test]
    fn damage_is_reported_not_read_past() {
        let entries: Vec<_> = (0u32..2_000).map(|i| (i.to_be_bytes().to_vec(), vec![1u8; 40])).collect();
        let (_dir, path) = write(&[("key", entries)]);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Both meta pages gone: not a bbolt file any more.
        let copy = std::fs::read(&path).unwrap();
        file.write_all_at(&[0u8; 16], HEADER as u64).unwrap();
        file.write_all_at(&[0u8; 16], (PAGE_SIZE + HEADER) as u64).unwrap();
        assert!(matches!(BoltReader::open(&path), Err(BoltError::Invalid(_))));
        // A leaf page whose ID is wrong: reading stops with an error, and the check
        // names it.
        std::fs::write(&path, &copy).unwrap();
        file.write_all_at(&999u64.to_le_bytes(), 4 * PAGE_SIZE as u64).unwrap();
        let reader = BoltReader::open(&path).unwrap();
        let result = reader.for_each(b"key", |_, _| Ok::<_, BoltError>(()));
        assert!(matches!(result, Err(BoltError::Invalid(_))), "{result:?}");
        assert!(!reader.check().unwrap().is_empty());
        // A file cut short.
        std::fs::write(&path, &copy[..copy.len() - PAGE_SIZE]).unwrap();
        assert!(matches!(BoltReader::open(&path), Err(BoltError::Invalid(_))));
    }
}
