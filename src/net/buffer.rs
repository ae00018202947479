//! `Buffer`: a byte queue with a read index, as muduo's `Buffer`.
//!
//! Bytes are appended at the back and consumed from the front; the consumed prefix is
//! reclaimed lazily, when it is more than half the storage. An empty buffer gives its
//! storage back, so an idle connection costs no buffer memory.
//!
//! Not thread safe; owned by one connection on its loop thread.

/// Storage kept by an empty buffer; anything larger is freed when the buffer empties.
const KEEP_CAPACITY: usize = 4 * 1024;

#[derive(Debug, Default)]
pub struct Buffer {
    data: Vec<u8>,
    read: usize,
}

impl Buffer {
    pub fn new() -> Buffer {
        Buffer::default()
    }

    /// The bytes not consumed yet, oldest first.
    pub fn readable(&self) -> &[u8] {
        &self.data[self.read..]
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.read
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Drops the first `n` readable bytes (all of them if `n` is larger).
    pub fn consume(&mut self, n: usize) {
        self.read = (self.read + n).min(self.data.len());
        if self.read == self.data.len() {
            self.read = 0;
            if self.data.capacity() > KEEP_CAPACITY {
                self.data = Vec::new();
            } else {
                self.data.clear();
            }
        } else if self.read > self.data.len() / 2 && self.read > KEEP_CAPACITY {
            self.data.drain(..self.read);
            self.read = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_then_consume_in_pieces() {
        let mut b = Buffer::new();
        b.append(b"hello ");
        b.append(b"world");
        assert_eq!(b.readable(), b"hello world");
        b.consume(6);
        assert_eq!(b.readable(), b"world");
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.readable(), b"");
    }

    #[test]
    fn empty_buffer_frees_large_storage() {
        let mut b = Buffer::new();
        b.append(&vec![7u8; 1 << 20]);
        b.consume(1 << 20);
        assert_eq!(b.data.capacity(), 0);
    }

    #[test]
    fn consumed_prefix_is_reclaimed_and_order_kept() {
        let mut b = Buffer::new();
        let mut expect = std::collections::VecDeque::new();
        for i in 0..100_000u32 {
            let byte = (i % 251) as u8;
            b.append(&[byte]);
            expect.push_back(byte);
            if i % 3 == 0 {
                b.consume(2);
                expect.pop_front();
                expect.pop_front();
            }
            assert!(b.data.len() <= 2 * (b.len() + KEEP_CAPACITY) + 1);
        }
        assert_eq!(b.readable(), expect.make_contiguous());
    }
}
