//! A TigerBeetle client for synchronous callers.
//!
//! The client is async and its calls never time out by themselves, and dropping it
//! blocks while it joins its I/O thread. A [`Session`] pairs a client with a small
//! private runtime, and [`Session::close`] drops the client outside the runtime
//! (cancelling requests still in flight, milliseconds) before shutting the runtime
//! down. Callers bound every call with `tokio::time::timeout`.

use std::time::Duration;

use anyhow::{Context, Result};
use tigerbeetle_unofficial as tb;

use crate::exit::{coded, Code};

pub struct Session {
    pub rt: tokio::runtime::Runtime,
    pub client: tb::Client,
}

impl Session {
    /// A client for `addresses`; `what` names the setting in errors (for example
    /// "[ledger] addresses"). Opening does not touch the network.
    pub fn open(cluster_id: u128, addresses: &str, what: &str) -> Result<Session> {
        quiet_client_logs();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the runtime for the TigerBeetle client")?;
        let client = tb::Client::new(cluster_id, addresses.as_bytes()).map_err(|e| {
            coded(
                Code::Config,
                format!("{what} {addresses:?} are not usable: {e}"),
            )
        })?;
        Ok(Session { rt, client })
    }

    /// Drops the client outside the runtime, then stops the runtime.
    pub fn close(self) {
        let Session { rt, client } = self;
        drop(client);
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Routes the TigerBeetle client library's own log lines. Without a callback it
/// prints a warning line to stderr several times a second while a cluster is
/// unreachable, which would flood cron mail and the journal; bkp reports an
/// unreachable cluster itself, once, with what to do. Errors are kept.
pub fn quiet_client_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    unsafe extern "C" fn on_log(level: u32, msg: *const u8, len: u32) {
        if level != tigerbeetle_unofficial_sys::TB_LOG_LEVEL::TB_LOG_ERR || msg.is_null() {
            return;
        }
        // SAFETY: the library passes a valid buffer of `len` bytes for the call.
        let bytes = unsafe { std::slice::from_raw_parts(msg, len as usize) };
        eprintln!(
            "bkp: tigerbeetle client: {}",
            String::from_utf8_lossy(bytes)
        );
    }
    ONCE.call_once(|| {
        // SAFETY: registers a function that lives for the whole process.
        unsafe {
            let _ =
                tigerbeetle_unofficial_sys::tb_client_register_log_callback(Some(on_log), false);
        }
    });
}
