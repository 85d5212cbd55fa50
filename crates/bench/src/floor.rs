//! The floor under one write's latency on this machine: a durable append to the disk
//! the servers' data dirs are on, plus a loopback round trip, measured in the same run
//! as the servers.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

/// What one write cannot beat here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    /// Median of 4 KiB appended and `fdatasync`'d, as a WAL does.
    pub(crate) fsync: Duration,
    /// Median of 64 bytes sent to a loopback echo and read back.
    pub(crate) round_trip: Duration,
}

impl Floor {
    pub(crate) fn total(&self) -> Duration {
        self.fsync + self.round_trip
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Measures the floor in a fresh directory where the servers' data dirs go.
pub(crate) fn measure() -> anyhow::Result<Floor> {
    let dir = tempfile::tempdir()?;
    let file = OpenOptions::new().create(true).write(true).truncate(true).open(dir.path().join("fsync"))?;
    let block = [0x5a; 4096];
    let mut fsyncs = Vec::with_capacity(200);
    for n in 0..200u64 {
        let started = Instant::now();
        file.write_all_at(&block, n * block.len() as u64)?;
        file.sync_data()?;
        fsyncs.push(started.elapsed());
    }

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut message = [0; 64];
        while stream.read_exact(&mut message).is_ok() {
            stream.write_all(&message)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut message = [0; 64];
    let mut round_trips = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let started = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut message)?;
        round_trips.push(started.elapsed());
    }
    drop(stream);
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(Floor { fsync: median(fsyncs), round_trip: median(round_trips) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_floor_is_measured_and_adds_up() {
        let floor = super::measure().unwrap();
        assert!(floor.fsync > std::time::Duration::ZERO && floor.round_trip > std::time::Duration::ZERO);
        assert_eq!(floor.total(), floor.fsync + floor.round_trip);
    }
}
