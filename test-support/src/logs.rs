//! Everything the test process logs, captured to be searched (for Secret values): the
//! controller and the clients it uses at their most verbose. The in-process API server and this
//! crate are left out: the API server sees the Secrets a test creates, and it is not the
//! controller.

use std::sync::{Mutex, Once};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary). Call before anything logs. Panics
/// if another subscriber was installed first: then nothing would be captured, and a search of
/// the capture would prove nothing.
pub fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter("trace,sluice_e2e=off,sluice_test_support=off")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init()
            .expect("the log capture is the process's only subscriber");
    });
}

/// What was logged so far.
pub fn text() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
