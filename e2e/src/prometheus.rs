//! A real Prometheus server for tests: installed when missing, started on a free loopback port.
