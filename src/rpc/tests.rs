//! Channel tests against a fake worker over in-memory pipes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fake::pair;
use super::*;

/// One field of a notification's raw params.
fn field(params: &str, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(params).expect("params are JSON");
    v[name].clone()
}

fn quick() -> RpcClientConfig {
    RpcClientConfig::new(Duration::from_secs(5))
}

#[tokio::test]
async fn responses_are_correlated_by_id_not_by_order() {
    let (client, mut worker) = pair(quick());
    let a = tokio::spawn({
        let c = client.clone();
        async move { c.request("a", json!({})).await }
    });
    let first = worker.read().await;
    let b = tokio::spawn({
        let c = client.clone();
        async move { c.request("b", json!({})).await }
    });
    let second = worker.read().await;
    // Answer in reverse order, with a notification in between.
    worker
        .write(json!({"id": second["id"], "result": {"who": "b"}}))
        .await;
    worker
        .write(json!({"method": "thread/started", "params": {"threadId": "x"}}))
        .await;
    worker
        .write(json!({"id": first["id"], "result": {"who": "a"}}))
        .await;
    assert_eq!(a.await.unwrap().unwrap(), json!({"who": "a"}));
    assert_eq!(b.await.unwrap().unwrap(), json!({"who": "b"}));
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn remote_errors_are_typed() {
    let (client, mut worker) = pair(quick());
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.request("foo/bar", json!({})).await }
    });
    let req = worker.read().await;
    worker
        .write(json!({"id": req["id"], "error": {"code": -32600, "message": "Invalid request"}}))
        .await;
    assert_eq!(
        call.await.unwrap().unwrap_err(),
        RpcError::Remote {
            code: -32600,
            message: "Invalid request".into()
        }
    );
}

#[tokio::test]
async fn every_server_request_gets_an_answer() {
    let (client, mut worker) = pair(quick());
    worker
        .write(json!({"id": 0, "method": "item/commandExecution/requestApproval", "params": {"threadId": "t"}}))
        .await;
    assert_eq!(
        worker.read().await,
        json!({"id": 0, "result": {"decision": "decline"}})
    );
    worker
        .write(
            json!({"id": 1, "method": "item/tool/requestUserInput", "params": {"threadId": "t"}}),
        )
        .await;
    assert_eq!(
        worker.read().await,
        json!({"id": 1, "result": {"answers": {}}})
    );
    // A tool call for a thread nobody follows: answered as a failed call.
    worker.write(json!({"id": 2, "method": "item/tool/call", "params": {"threadId": "t", "callId": "c"}})).await;
    let answer = worker.read().await;
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["result"]["success"], false);
    worker
        .write(json!({"id": "s-3", "method": "attestation/generate", "params": {}}))
        .await;
    let answer = worker.read().await;
    assert_eq!(answer["id"], "s-3");
    assert_eq!(answer["error"]["code"], -32601);
    drop(client);
}

#[tokio::test]
async fn notifications_and_tool_calls_reach_their_thread_only() {
    let (client, mut worker) = pair(quick());
    let mut t1 = client.subscribe("t1");
    let mut t2 = client.subscribe("t2");
    worker.write(json!({"method": "item/agentMessage/delta", "params": {"threadId": "t2", "delta": "b"}})).await;
    worker.write(json!({"method": "item/agentMessage/delta", "params": {"threadId": "t1", "delta": "a"}})).await;
    worker.write(json!({"id": 7, "method": "item/tool/call", "params": {"threadId": "t1", "callId": "c1"}})).await;
    match t1.recv().await.unwrap() {
        ThreadEvent::Notification(n) => assert_eq!(field(n.params(), "delta"), "a"),
        other => panic!("{other:?}"),
    }
    match t1.recv().await.unwrap() {
        ThreadEvent::Request(req) => {
            assert_eq!(req.id, RequestId::Int(7));
            client
                .respond(&req.id, Ok(json!({"contentItems": [], "success": true})))
                .await
                .unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        worker.read().await,
        json!({"id": 7, "result": {"contentItems": [], "success": true}})
    );
    match t2.recv().await.unwrap() {
        ThreadEvent::Notification(n) => assert_eq!(field(n.params(), "delta"), "b"),
        other => panic!("{other:?}"),
    }
}

/// Lines the one-pass route (`scan.rs`) leaves to the decoder arrive as
/// they did before it: a request whose id comes last is a request, an
/// escaped thread id is still its thread's.
#[tokio::test]
async fn lines_off_the_fast_route_are_routed_by_decoding() {
    let (client, mut worker) = pair(quick());
    let mut t1 = client.subscribe("t1");
    worker
        .write_raw(r#"{"method":"item/tool/call","params":{"threadId":"t1","callId":"c1"},"id":9}"#)
        .await;
    worker
        .write_raw(
            r#"{"method":"item/agentMessage/delta","params":{"threadId":"t\u0031","delta":"e"}}"#,
        )
        .await;
    worker
        .write_raw(r#"{"method":"item/agentMessage/delta","params":{"delta":"f","threadId":"t1"}}"#)
        .await;
    match t1.recv().await.unwrap() {
        ThreadEvent::Request(req) => assert_eq!(req.id, RequestId::Int(9)),
        other => panic!("{other:?}"),
    }
    for delta in ["e", "f"] {
        match t1.recv().await.unwrap() {
            ThreadEvent::Notification(n) => {
                assert_eq!(n.method(), "item/agentMessage/delta");
                assert_eq!(field(n.params(), "delta"), delta);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unread_tool_call_is_answered_when_its_subscriber_goes() {
    let (client, mut worker) = pair(quick());
    let sub = client.subscribe("t1");
    worker.write(json!({"id": 4, "method": "item/tool/call", "params": {"threadId": "t1", "callId": "c1"}})).await;
    // Let the reader deliver it before the subscriber is dropped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(sub);
    let answer = worker.read().await;
    assert_eq!(answer["id"], 4);
    assert_eq!(answer["result"]["success"], false);
    assert_eq!(client.subscribed_threads(), 0);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_cut_off_without_stalling_others() {
    let config = RpcClientConfig {
        subscription_capacity: 4,
        ..quick()
    };
    let (client, mut worker) = pair(config);
    let mut slow = client.subscribe("slow");
    let mut fast = client.subscribe("fast");
    for i in 0..10 {
        worker
            .write(json!({"method": "m", "params": {"threadId": "slow", "i": i}}))
            .await;
    }
    worker
        .write(json!({"method": "m", "params": {"threadId": "fast", "i": 0}}))
        .await;
    assert!(matches!(
        fast.recv().await,
        Ok(ThreadEvent::Notification(_))
    ));
    let mut got = 0;
    let end = loop {
        match slow.recv().await {
            Ok(_) => got += 1,
            Err(end) => break end,
        }
    };
    assert_eq!(got, 4, "the buffered events are still delivered");
    assert_eq!(end, SubscriptionEnd::Overflow);
}

#[tokio::test]
async fn a_silent_worker_times_requests_out_and_forgets_them() {
    let config = RpcClientConfig::new(Duration::from_millis(100));
    let (client, mut worker) = pair(config);
    let err = client.request("model/list", json!({})).await.unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Timeout {
                method: "model/list",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(client.pending_requests(), 0);
    // A late answer is dropped without harm.
    let req = worker.read().await;
    worker.write(json!({"id": req["id"], "result": {}})).await;
    worker.write(json!({"id": 999, "result": {}})).await;
    let ok = tokio::spawn({
        let c = client.clone();
        async move { c.request("x", json!({})).await }
    });
    let req = worker.read().await;
    worker.write(json!({"id": req["id"], "result": 1})).await;
    assert_eq!(ok.await.unwrap().unwrap(), json!(1));
}

#[tokio::test]
async fn malformed_lines_are_skipped() {
    let (client, mut worker) = pair(quick());
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.request("x", json!({})).await }
    });
    let req = worker.read().await;
    worker.write_raw("this is not json").await;
    worker.write_raw("[1,2,3]").await;
    worker.write_raw(r#"{"id":900,"#).await;
    worker.write_raw("").await;
    worker
        .write(json!({"id": req["id"], "result": "fine"}))
        .await;
    assert_eq!(call.await.unwrap().unwrap(), json!("fine"));
}

#[tokio::test]
async fn when_the_worker_dies_everything_pending_fails_at_once() {
    let (client, worker) = pair(RpcClientConfig::new(Duration::from_secs(60)));
    let mut sub = client.subscribe("t");
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.request("turn/start", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    drop(worker); // stdout closes, as when the process exits
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::WorkerGone(_)), "{err:?}");
    assert!(matches!(
        sub.recv().await,
        Err(SubscriptionEnd::WorkerGone(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
    // New calls fail fast too.
    assert!(matches!(
        client.request("x", json!({})).await,
        Err(RpcError::WorkerGone(_))
    ));
    assert!(client.is_closed());
}

#[tokio::test]
async fn lines_stay_whole_and_in_order_when_the_pipe_is_full() {
    // A 64-byte pipe and a 1 KiB backlog cap: most lines cannot be written
    // at once, senders queue behind each other and wait for room.
    let config = RpcClientConfig {
        outgoing_backlog_bytes: 1024,
        ..quick()
    };
    let (client, mut worker) = super::fake::pair_with(config, 64, None);
    let senders: Vec<_> = (0..8)
        .map(|task| {
            let c = client.clone();
            tokio::spawn(async move {
                for seq in 0..50 {
                    let pad = "x".repeat(100 + seq);
                    c.notify("n", Some(json!({"task": task, "seq": seq, "pad": pad})))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // The worker is behind: nothing is read for a while.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut next = [0u64; 8];
    for _ in 0..400 {
        let line = worker.read().await;
        let (task, seq) = (
            line["params"]["task"].as_u64().unwrap(),
            line["params"]["seq"].as_u64().unwrap(),
        );
        assert_eq!(
            line["params"]["pad"].as_str().unwrap().len() as u64,
            100 + seq
        );
        assert_eq!(next[task as usize], seq, "task {task}'s lines in order");
        next[task as usize] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(next, [50; 8]);
    assert!(!client.is_closed());
}

#[tokio::test]
async fn a_detached_request_is_counted_when_answered_and_not_kept() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer: CallObserver = {
        let seen = seen.clone();
        Arc::new(move |method, outcome| seen.lock().unwrap().push((method, outcome)))
    };
    let (client, mut worker) = super::fake::pair_with(quick(), 1 << 16, Some(observer));
    unsubscribe_t1(&client);
    let req = worker.read().await;
    assert_eq!(req["method"], "thread/unsubscribe");
    assert_eq!(req["params"]["threadId"], "t1");
    assert_eq!(client.pending_requests(), 1);
    worker
        .write(json!({"id": req["id"], "result": {"status": "unsubscribed"}}))
        .await;
    // An answer to a detached request wakes nobody: wait for the reader.
    for _ in 0..100 {
        if client.pending_requests() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.pending_requests(), 0);
    assert_eq!(*seen.lock().unwrap(), vec![("thread/unsubscribe", "ok")]);
}

#[tokio::test]
async fn a_broken_stdin_closes_the_channel() {
    let (client, worker) = pair(quick());
    let _stdout = worker.close_stdin();
    let err = client.request("x", json!({})).await.unwrap_err();
    assert!(matches!(err, RpcError::WorkerGone(_)), "{err:?}");
    let reason = client.close_reason().expect("closed");
    assert!(
        reason.contains("writing to worker stdin failed"),
        "{reason}"
    );
    // Nothing is sent on a closed channel, and nothing is kept for it.
    unsubscribe_t1(&client);
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn a_detached_request_goes_out_right_after_the_next_request() {
    let (client, mut worker) = pair(quick());
    unsubscribe_t1(&client);
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.request("thread/start", json!({})).await }
    });
    // After it, in the same write: the request that is waited for first.
    let first = worker.read().await;
    let second = worker.read().await;
    assert_eq!(first["method"], "thread/start");
    assert_eq!(second["method"], "thread/unsubscribe");
    worker.write(json!({"id": first["id"], "result": {}})).await;
    assert_eq!(call.await.unwrap().unwrap(), json!({}));
}

#[tokio::test]
async fn a_line_longer_than_the_maximum_is_skipped_and_the_next_one_read() {
    let config = RpcClientConfig {
        max_line_bytes: 1000,
        ..quick()
    };
    let (client, mut worker) = pair(config);
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.request("x", json!({})).await }
    });
    let req = worker.read().await;
    // Far past the maximum, in pieces, then a good line in the same write
    // as the long line's end.
    let long = format!(
        "{{\"id\":{},\"result\":\"{}\"}}",
        req["id"],
        "a".repeat(5000)
    );
    let (head, tail) = long.split_at(2500);
    worker.write_part(head).await;
    let good = json!({"id": req["id"], "result": "fine"}).to_string();
    worker.write_part(&format!("{tail}\n{good}\n")).await;
    assert_eq!(call.await.unwrap().unwrap(), json!("fine"));
    assert!(!client.is_closed());
}

/// A detached `thread/unsubscribe` of thread `t1`.
fn unsubscribe_t1(client: &RpcClient) {
    client.send_detached::<crate::protocol::ThreadUnsubscribe>(&crate::protocol::ThreadIdParams {
        thread_id: "t1".into(),
    });
}
