//! The demo's workload: random shop transactions on Spanner — new customers with orders,
//! updates, new orders, deleted orders and deleted customers — spread over every shard, one
//! read-write transaction at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use google_cloud_spanner::client::DatabaseClient;
use google_cloud_spanner::key::{Key, KeySet};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::value::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use revrepl_record::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::error::LauncherError;

const NAMES: [&str; 8] = [
    "Ada Lovelace",
    "Zoë O'Brien",
    "José \"Pepe\" Núñez",
    "Grace Hopper",
    "Ｍｉｋａ 佐藤",
    "Edsger W. Dijkstra",
    "Back\\slash Bob",
    "Émilie du Châtelet",
];
const ITEMS: [&str; 6] = [
    "coffee beans",
    "teapot",
    "mug, large",
    "crab plushie 🦀",
    "notebook (A5)",
    "100% wool socks",
];
const TIERS: [&str; 3] = ["bronze", "silver", "gold"];

/// What the workload committed so far; shared with the progress display.
#[derive(Debug, Default)]
pub struct WorkloadCounts {
    /// Committed transactions.
    pub transactions: AtomicU64,
    /// Inserted rows.
    pub inserts: AtomicU64,
    /// Updated rows.
    pub updates: AtomicU64,
    /// Deleted rows.
    pub deletes: AtomicU64,
}

impl WorkloadCounts {
    /// Every mod (row change) committed.
    pub fn mods(&self) -> u64 {
        self.inserts.load(Ordering::Relaxed)
            + self.updates.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
    }

    /// `1234 mods (500 inserts, 600 updates, 134 deletes) in 700 transactions`.
    pub fn describe(&self) -> String {
        format!(
            "{} mods ({} inserts, {} updates, {} deletes) in {} transactions",
            self.mods(),
            self.inserts.load(Ordering::Relaxed),
            self.updates.load(Ordering::Relaxed),
            self.deletes.load(Ordering::Relaxed),
            self.transactions.load(Ordering::Relaxed)
        )
    }
}

#[derive(Debug, Clone)]
struct Customer {
    shard: String,
    orders: BTreeSet<i64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    inserts: u64,
    updates: u64,
    deletes: u64,
}

/// Random transactions over the demo schema; remembers which rows exist.
pub struct Workload {
    client: DatabaseClient,
    rng: StdRng,
    shards: Vec<String>,
    customers: BTreeMap<i64, Customer>,
    next_customer: i64,
    next_order: i64,
}

impl Workload {
    /// A workload on `client` over `shards`, with a fixed `seed`.
    pub fn new(client: DatabaseClient, shards: &[&str], seed: u64) -> Self {
        Self {
            client,
            rng: StdRng::seed_from_u64(seed),
            shards: shards.iter().map(|s| s.to_string()).collect(),
            customers: BTreeMap::new(),
            next_customer: 1,
            next_order: 1,
        }
    }

    /// Commits transactions until `stop_at` (wall clock) or `stop`, counting into `counts`.
    pub async fn run(
        mut self,
        stop_at: Timestamp,
        stop: CancellationToken,
        counts: Arc<WorkloadCounts>,
    ) -> Result<(), LauncherError> {
        while !stop.is_cancelled() && Timestamp::from(chrono::Utc::now()) < stop_at {
            let (mutations, tally) = self.plan();
            if mutations.is_empty() {
                continue;
            }
            self.client
                .read_write_transaction()
                .build()
                .run(async |transaction| {
                    transaction.buffer(mutations.clone())?;
                    Ok(())
                })
                .await
                .map_err(|e| LauncherError::Spanner {
                    location: super::schema::database_path(),
                    operation: "commit a workload transaction".into(),
                    message: e.to_string(),
                })?;
            counts.transactions.fetch_add(1, Ordering::Relaxed);
            counts.inserts.fetch_add(tally.inserts, Ordering::Relaxed);
            counts.updates.fetch_add(tally.updates, Ordering::Relaxed);
            counts.deletes.fetch_add(tally.deletes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// One transaction: one to three operations, on different customers (Spanner folds two
    /// changes of one row in one transaction into one mod, and the counts would be off).
    fn plan(&mut self) -> (Vec<Mutation>, Tally) {
        let mut mutations = Vec::new();
        let mut tally = Tally::default();
        let mut touched = BTreeSet::new();
        let operations = self.rng.random_range(1..=3);
        for _ in 0..operations {
            self.plan_one(&mut mutations, &mut tally, &mut touched);
        }
        (mutations, tally)
    }

    fn plan_one(
        &mut self,
        mutations: &mut Vec<Mutation>,
        tally: &mut Tally,
        touched: &mut BTreeSet<i64>,
    ) {
        // Grow first, then keep the population steady.
        let choice = if self.customers.len() < 20 {
            0
        } else {
            self.rng.random_range(0..100)
        };
        let existing = self.pick_customer(touched);
        if let Some((id, _)) = &existing {
            touched.insert(*id);
        }
        match (choice, existing) {
            (0..30, _) | (_, None) => {
                let id = self.next_customer;
                self.next_customer += 1;
                let shard = self.shards[self.rng.random_range(0..self.shards.len())].clone();
                mutations.push(self.customer_row(
                    Mutation::new_insert_builder("Customers"),
                    id,
                    &shard,
                ));
                tally.inserts += 1;
                let mut orders = BTreeSet::new();
                for _ in 0..self.rng.random_range(0..=2) {
                    let order = self.new_order_id();
                    mutations.push(self.order_row(
                        Mutation::new_insert_builder("Orders"),
                        id,
                        order,
                        &shard,
                    ));
                    tally.inserts += 1;
                    orders.insert(order);
                }
                touched.insert(id);
                self.customers.insert(id, Customer { shard, orders });
            }
            (30..55, Some((id, customer))) => {
                mutations.push(self.customer_row(
                    Mutation::new_update_builder("Customers"),
                    id,
                    &customer.shard,
                ));
                tally.updates += 1;
            }
            (55..75, Some((id, customer))) => {
                let order = self.new_order_id();
                mutations.push(self.order_row(
                    Mutation::new_insert_builder("Orders"),
                    id,
                    order,
                    &customer.shard,
                ));
                tally.inserts += 1;
                if let Some(c) = self.customers.get_mut(&id) {
                    c.orders.insert(order);
                }
            }
            (75..87, Some((id, customer))) => {
                if let Some(&order) = customer.orders.iter().next_back() {
                    mutations.push(self.order_row(
                        Mutation::new_update_builder("Orders"),
                        id,
                        order,
                        &customer.shard,
                    ));
                    tally.updates += 1;
                }
            }
            (87..95, Some((id, customer))) => {
                if let Some(&order) = customer.orders.iter().next() {
                    mutations.push(Mutation::delete(
                        "Orders",
                        KeySet::builder()
                            .add_key(Key::new(vec![Value::from(id), Value::from(order)]))
                            .build(),
                    ));
                    tally.deletes += 1;
                    if let Some(c) = self.customers.get_mut(&id) {
                        c.orders.remove(&order);
                    }
                }
            }
            (_, Some((id, customer))) => {
                // A customer leaves: its orders first (the foreign key), in one transaction.
                for order in &customer.orders {
                    mutations.push(Mutation::delete(
                        "Orders",
                        KeySet::builder()
                            .add_key(Key::new(vec![Value::from(id), Value::from(*order)]))
                            .build(),
                    ));
                    tally.deletes += 1;
                }
                mutations.push(Mutation::delete(
                    "Customers",
                    KeySet::builder()
                        .add_key(Key::new(vec![Value::from(id)]))
                        .build(),
                ));
                tally.deletes += 1;
                self.customers.remove(&id);
            }
        }
    }

    /// A random existing customer not in `touched`, if one is found in a few tries.
    fn pick_customer(&mut self, touched: &BTreeSet<i64>) -> Option<(i64, Customer)> {
        for _ in 0..5 {
            if self.customers.is_empty() {
                return None;
            }
            let index = self.rng.random_range(0..self.customers.len());
            let picked = self.customers.iter().nth(index);
            if let Some((id, customer)) = picked
                && !touched.contains(id)
            {
                return Some((*id, customer.clone()));
            }
        }
        None
    }

    fn new_order_id(&mut self) -> i64 {
        let id = self.next_order;
        self.next_order += 1;
        id
    }

    /// A whole customer row with fresh random values.
    fn customer_row(
        &mut self,
        builder: google_cloud_spanner::mutation::WriteBuilder,
        id: i64,
        shard: &str,
    ) -> Mutation {
        let name = format!("{} #{id}", NAMES[self.rng.random_range(0..NAMES.len())]);
        let email = self
            .rng
            .random_bool(0.8)
            .then(|| format!("customer{id}@example.com"));
        let tier = TIERS[self.rng.random_range(0..TIERS.len())].to_string();
        let balance = format!(
            "{}.{:02}",
            self.rng.random_range(-500..100_000),
            self.rng.random_range(0..100)
        );
        let birthday = self.rng.random_bool(0.7).then(|| {
            format!(
                "{}-{:02}-{:02}",
                self.rng.random_range(1940..2006),
                self.rng.random_range(1..=12),
                self.rng.random_range(1..=28)
            )
        });
        builder
            .set("CustomerId")
            .to(id)
            .set("ShardId")
            .to(shard.to_string())
            .set("Name")
            .to(name)
            .set("Email")
            .to(email)
            .set("Tier")
            .to(tier)
            .set("Balance")
            .to(Value::from(balance))
            .set("Active")
            .to(self.rng.random_bool(0.9))
            .set("Birthday")
            .to(birthday.map(Value::from))
            .set("UpdatedAt")
            .to(Value::from(whole_seconds_now()))
            .build()
    }

    /// A whole order row with fresh random values.
    fn order_row(
        &mut self,
        builder: google_cloud_spanner::mutation::WriteBuilder,
        customer: i64,
        order: i64,
        shard: &str,
    ) -> Mutation {
        let item = ITEMS[self.rng.random_range(0..ITEMS.len())].to_string();
        let price = format!(
            "{}.{:02}",
            self.rng.random_range(0..500),
            self.rng.random_range(0..100)
        );
        let weight: f64 = self.rng.random_range(0.05..25.0);
        let notes = self.rng.random_bool(0.6).then(|| {
            serde_json::json!({
                "gift": self.rng.random_bool(0.3),
                "tags": ["demo", shard],
                "note": "leave at the door, \"please\"",
            })
            .to_string()
        });
        builder
            .set("CustomerId")
            .to(customer)
            .set("OrderId")
            .to(order)
            .set("ShardId")
            .to(shard.to_string())
            .set("Item")
            .to(item)
            .set("Quantity")
            .to(self.rng.random_range(1_i64..10))
            .set("Price")
            .to(Value::from(price))
            .set("Weight")
            .to(weight)
            .set("Notes")
            .to(notes.map(Value::from))
            .set("PlacedAt")
            .to(Value::from(whole_seconds_now()))
            .build()
    }
}

/// Now in RFC 3339 with whole seconds (the emulator's change stream drops sub-seconds of
/// TIMESTAMP values, which production Spanner does not; whole seconds compare equal anyway).
fn whole_seconds_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
