//! [`FleetSwitch`] against a real `redis-server` (Debian's package; `./scripts/test`
//! installs it): one publish switches every follower, and a follower keeps its state
//! while Redis is away.
#![cfg(feature = "redis")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use codex_maintenance::{FleetSwitch, MaintenanceConfig, MaintenanceLayer};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn conn(port: u16) -> ConnectionManager {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config).unwrap()
}

async fn eventually(what: &str, ok: impl Fn() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn one_publish_switches_every_replica_and_redis_loss_keeps_the_state() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Redis(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server; ./scripts/test does it)"),
    );
    let handles: Vec<_> = (0..3)
        .map(|_| MaintenanceLayer::pair(MaintenanceConfig::default()).1)
        .collect();
    let switch = FleetSwitch::new(conn(port), "test:maintenance");
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let followers: Vec<_> = handles
        .iter()
        .map(|h| {
            let errors = errors.clone();
            FleetSwitch::new(conn(port), "test:maintenance").follow(
                h.clone(),
                Duration::from_millis(20),
                move |_| {
                    errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                },
            )
        })
        .collect();

    // Redis starting up: publish as soon as it answers.
    let mut published = false;
    for _ in 0..200 {
        if switch.publish(true, Some("back at noon")).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(published, "redis-server did not answer");
    eventually("every replica in maintenance", || {
        handles.iter().all(|h| h.is_enabled())
    })
    .await;
    assert!(handles.iter().all(|h| &*h.message() == "back at noon"));

    drop(redis);
    eventually("the lost Redis is noticed", || {
        errors.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    assert!(
        handles.iter().all(|h| h.is_enabled()),
        "kept while Redis is away"
    );
    for f in followers {
        f.abort();
    }
}
