//! `initialize` → `initialized` → `model/list`.

use std::time::Duration;

use crate::protocol::{
    ClientInfo, Initialize, InitializeCapabilities, InitializeParams, Model, ModelList,
    ModelListParams, OPT_OUT_NOTIFICATIONS,
};
use crate::rpc::{RpcClient, RpcError};

/// Runs the handshake. `startup` bounds the `initialize` answer and `total`
/// the whole handshake.
pub async fn handshake(
    client: &RpcClient,
    startup: Duration,
    total: Duration,
) -> Result<Vec<Model>, String> {
    let deadline = tokio::time::Instant::now() + total;
    let params = InitializeParams {
        client_info: ClientInfo {
            name: "codex-completions-api".into(),
            title: Some("Codex Completions API".into()),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        capabilities: Some(InitializeCapabilities {
            // Client tools are codex "dynamic tools", an experimental API.
            experimental_api: true,
            opt_out_notification_methods: Some(
                OPT_OUT_NOTIFICATIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        }),
    };
    tokio::time::timeout(startup, client.call::<Initialize>(&params))
        .await
        .map_err(|_| {
            format!("no answer to `initialize` within {startup:?} (WORKER_STARTUP_TIMEOUT_MS)")
        })?
        .map_err(|e| format!("`initialize` failed: {e}"))?;
    client
        .notify("initialized", None)
        .await
        .map_err(|e| e.to_string())?;

    let models = tokio::time::timeout_at(deadline, list_models(client))
        .await
        .map_err(|_| {
            format!("handshake did not finish within {total:?} (WORKER_HANDSHAKE_TIMEOUT_MS)")
        })?
        .map_err(|e| format!("`model/list` failed: {e}"))?;
    Ok(models)
}

/// Reads every page of `model/list`.
pub(crate) async fn list_models(client: &RpcClient) -> Result<Vec<Model>, RpcError> {
    let mut models = Vec::new();
    let mut cursor = None;
    // Bounded: a misbehaving worker cannot keep us paging forever.
    for _ in 0..100 {
        let page = client
            .call::<ModelList>(&ModelListParams {
                cursor,
                include_hidden: None,
            })
            .await?;
        models.extend(page.data);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(models)
}
