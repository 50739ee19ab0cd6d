//! Buffered stdout: a failed write (a closed pipe) is an error like any
//! other, not the panic `println!` makes of it.

use std::io::{self, BufWriter, StdoutLock, Write};

pub struct Out(BufWriter<StdoutLock<'static>>);

impl Out {
    pub fn stdout() -> Self {
        Self(BufWriter::new(io::stdout().lock()))
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.0.flush()?)
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
