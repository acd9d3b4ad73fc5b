//! The Prometheus endpoint over real HTTP: a counter recorded through the global OpenTelemetry
//! API shows up in `GET /metrics`, and moves.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use revrepl_telemetry::{MetricsOptions, Telemetry};

/// An HTTP client that ignores proxy variables: the endpoint is on loopback.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

async fn get(url: &str) -> Result<reqwest::Response, reqwest::Error> {
    http().get(url).send().await
}

async fn scrape(url: &str) -> String {
    let response = get(url).await.expect("GET /metrics");
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    response.text().await.expect("metrics body")
}

/// The value of the sample line that starts with `name{` and contains `label`.
fn sample(body: &str, name: &str, label: &str) -> Option<f64> {
    body.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_recorded_counter_is_scraped_over_http() {
    let telemetry = Telemetry::install(
        MetricsOptions::new("revrepl-telemetry-test")
            .with_prometheus("127.0.0.1:0".parse().expect("address")),
    )
    .expect("install telemetry");
    let addr = telemetry.prometheus_addr().expect("endpoint address");
    let url = format!("http://{addr}/metrics");

    let counter = opentelemetry::global::meter("revrepl-test")
        .u64_counter("revrepl.test.records_applied")
        .with_description("Records applied in the test")
        .build();
    let shard = [KeyValue::new("shard", "s1")];
    counter.add(3, &shard);

    let name = "revrepl_test_records_applied_total";
    let body = scrape(&url).await;
    assert_eq!(sample(&body, name, "shard=\"s1\""), Some(3.0), "{body}");
    assert!(body.contains("# HELP revrepl_test_records_applied_total Records applied"));

    counter.add(4, &shard);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(&url).await;
        if sample(&body, name, "shard=\"s1\"") == Some(7.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counter did not move to 7: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let health = get(&format!("http://{addr}/healthz"))
        .await
        .expect("GET /healthz");
    assert!(health.status().is_success());
    let missing = get(&format!("http://{addr}/nope"))
        .await
        .expect("GET /nope");
    assert_eq!(missing.status().as_u16(), 404);

    telemetry.shutdown().await;
    assert!(
        get(&url).await.is_err(),
        "the endpoint should stop with shutdown"
    );
}

#[tokio::test]
async fn a_taken_address_is_reported_with_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let error = Telemetry::install(MetricsOptions::new("t").with_prometheus(addr))
        .expect_err("the address is taken");
    let text = error.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("--metrics-addr"),
        "{text}"
    );
}
