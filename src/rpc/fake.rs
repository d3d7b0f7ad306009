//! An in-memory fake worker: the other end of an [`RpcClient`]'s pipes, for
//! unit tests of the channel and of the core.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};

use super::{CallObserver, RpcClient, RpcClientConfig};

/// The worker's side of the pipes.
pub(crate) struct FakeWorker {
    from_client: Lines<BufReader<DuplexStream>>,
    to_client: DuplexStream,
}

impl FakeWorker {
    pub(crate) async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(5), self.from_client.next_line())
            .await
            .expect("client wrote nothing")
            .unwrap()
            .expect("client closed stdin");
        serde_json::from_str(&line).unwrap()
    }

    /// Stops reading stdin (a worker whose stdin broke) and keeps only its
    /// stdout.
    pub(crate) fn close_stdin(self) -> DuplexStream {
        self.to_client
    }

    pub(crate) async fn write(&mut self, v: Value) {
        self.write_raw(&v.to_string()).await;
    }

    /// Writes bytes as they are: part of a line, or several.
    pub(crate) async fn write_part(&mut self, text: &str) {
        self.to_client.write_all(text.as_bytes()).await.unwrap();
    }

    pub(crate) async fn write_raw(&mut self, line: &str) {
        self.to_client.write_all(line.as_bytes()).await.unwrap();
        self.to_client.write_all(b"\n").await.unwrap();
    }
}

pub(crate) fn pair(config: RpcClientConfig) -> (RpcClient, FakeWorker) {
    pair_with(config, 1 << 16, None)
}

/// [`pair`] with a stdin pipe of `pipe_bytes` (a small one fills up as a
/// real pipe does when codex is behind) and an observer of finished calls.
pub(crate) fn pair_with(
    config: RpcClientConfig,
    pipe_bytes: usize,
    observer: Option<CallObserver>,
) -> (RpcClient, FakeWorker) {
    let (client_stdin, worker_stdin) = tokio::io::duplex(pipe_bytes);
    let (worker_stdout, client_stdout) = tokio::io::duplex(1 << 16);
    let client = RpcClient::spawn(client_stdout, client_stdin, config, observer);
    (
        client,
        FakeWorker {
            from_client: BufReader::new(worker_stdin).lines(),
            to_client: worker_stdout,
        },
    )
}
