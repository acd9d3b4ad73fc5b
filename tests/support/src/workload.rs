//! A mixed write workload on the Spanner emulator that remembers every mod it committed, so
//! tests can check that replication delivered exactly those.
//!
//! Schema: `Users` (shard column `shard`, not a key), `Orders` (composite key, shard column),
//! and `Audit` (no shard column and absent from the session file: its records go to `skip/`).
//! Every transaction is one or more mutations; every mutation is one mod of the change stream.

use std::collections::BTreeMap;

use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::key::{Key, KeySet};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::value::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::ServiceError;

/// The DDL of the workload's tables and change stream (`NEW_ROW_AND_OLD_VALUES`).
pub const WORKLOAD_DDL: [&str; 4] = [
    "CREATE TABLE Users (id INT64 NOT NULL, shard STRING(50) NOT NULL, name STRING(MAX), \
     score FLOAT64) PRIMARY KEY (id)",
    "CREATE TABLE Orders (user_id INT64 NOT NULL, id INT64 NOT NULL, shard STRING(50) NOT NULL, \
     amount NUMERIC, note STRING(MAX)) PRIMARY KEY (user_id, id)",
    "CREATE TABLE Audit (id INT64 NOT NULL, msg STRING(MAX)) PRIMARY KEY (id)",
    "CREATE CHANGE STREAM revrepl_stream FOR ALL OPTIONS \
     (value_capture_type = 'NEW_ROW_AND_OLD_VALUES')",
];

/// The change stream [`WORKLOAD_DDL`] creates.
pub const WORKLOAD_STREAM: &str = "revrepl_stream";

/// A session file (Spanner Migration Tool format) for the workload: `Users` and `Orders` are
/// routed by their `shard` column; `Audit` is not in it.
pub const WORKLOAD_SESSION: &str = r#"{
  "SpSchema": {
    "t1": {"Name": "Users", "Id": "t1", "ColIds": ["c1", "c2", "c3", "c4"], "ShardIdColumn": "c2",
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "T": {"Name": "INT64"}},
                       "c2": {"Name": "shard", "Id": "c2", "T": {"Name": "STRING"}},
                       "c3": {"Name": "name", "Id": "c3", "T": {"Name": "STRING"}},
                       "c4": {"Name": "score", "Id": "c4", "T": {"Name": "FLOAT64"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]},
    "t2": {"Name": "Orders", "Id": "t2", "ColIds": ["c5", "c6", "c7", "c8", "c9"], "ShardIdColumn": "c7",
           "ColDefs": {"c5": {"Name": "user_id", "Id": "c5", "T": {"Name": "INT64"}},
                       "c6": {"Name": "id", "Id": "c6", "T": {"Name": "INT64"}},
                       "c7": {"Name": "shard", "Id": "c7", "T": {"Name": "STRING"}},
                       "c8": {"Name": "amount", "Id": "c8", "T": {"Name": "NUMERIC"}},
                       "c9": {"Name": "note", "Id": "c9", "T": {"Name": "STRING"}}},
           "PrimaryKeys": [{"ColId": "c5", "Order": 1}, {"ColId": "c6", "Order": 2}]}
  },
  "SrcSchema": {
    "t1": {"Name": "users", "Id": "t1", "ColIds": ["c1", "c3", "c4"],
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "Type": {"Name": "bigint"}},
                       "c3": {"Name": "name", "Id": "c3", "Type": {"Name": "varchar", "Mods": [255]}},
                       "c4": {"Name": "score", "Id": "c4", "Type": {"Name": "double"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]},
    "t2": {"Name": "orders", "Id": "t2", "ColIds": ["c5", "c6", "c8", "c9"],
           "ColDefs": {"c5": {"Name": "user_id", "Id": "c5", "Type": {"Name": "bigint"}},
                       "c6": {"Name": "id", "Id": "c6", "Type": {"Name": "bigint"}},
                       "c8": {"Name": "amount", "Id": "c8", "Type": {"Name": "decimal", "Mods": [20, 2]}},
                       "c9": {"Name": "note", "Id": "c9", "Type": {"Name": "text"}}},
           "PrimaryKeys": [{"ColId": "c5", "Order": 1}, {"ColId": "c6", "Order": 2}]}
  },
  "SyntheticPKeys": {}
}"#;

/// One committed mod, as the change stream should report it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommittedMod {
    /// Commit timestamp: (seconds, nanos).
    pub commit: (i64, i32),
    /// The table.
    pub table: String,
    /// The keys as change-stream JSON (INT64 as strings), keys sorted.
    pub keys: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub mod_type: &'static str,
    /// The logical shard (`skip` for `Audit`).
    pub shard: String,
}

#[derive(Debug, Clone)]
struct User {
    shard: String,
    orders: Vec<i64>,
}

/// Writes random transactions and remembers what it committed.
pub struct Workload {
    client: DatabaseClient,
    rng: StdRng,
    shards: Vec<String>,
    users: BTreeMap<i64, User>,
    next_user: i64,
    next_order: i64,
    next_audit: i64,
    committed: Vec<CommittedMod>,
}

enum Planned {
    Write(Mutation, CommittedMod),
}

impl Workload {
    /// Connects to `database` (`projects/p/instances/i/databases/d`) at `grpc_endpoint`.
    pub async fn connect(
        grpc_endpoint: &str,
        database: &str,
        shards: &[&str],
        seed: u64,
    ) -> Result<Self, ServiceError> {
        let spanner = Spanner::builder()
            .with_endpoint(grpc_endpoint.to_string())
            .build()
            .await
            .map_err(|e| ServiceError::Workload(format!("connect: {e}")))?;
        let client = spanner
            .database_client(database.to_string())
            .build()
            .await
            .map_err(|e| ServiceError::Workload(format!("connect: {e}")))?;
        Ok(Self {
            client,
            rng: StdRng::seed_from_u64(seed),
            shards: shards.iter().map(|s| s.to_string()).collect(),
            users: BTreeMap::new(),
            next_user: 1,
            next_order: 1,
            next_audit: 1,
            committed: Vec::new(),
        })
    }

    /// Every mod committed so far, sorted by commit timestamp.
    pub fn committed(&self) -> Vec<CommittedMod> {
        let mut all = self.committed.clone();
        all.sort();
        all
    }

    fn user_mod(&self, id: i64, mod_type: &'static str, shard: &str) -> CommittedMod {
        CommittedMod {
            commit: (0, 0),
            table: "Users".into(),
            keys: json!({"id": id.to_string()}).to_string(),
            mod_type,
            shard: shard.to_string(),
        }
    }

    fn order_mod(&self, user: i64, id: i64, mod_type: &'static str, shard: &str) -> CommittedMod {
        CommittedMod {
            commit: (0, 0),
            table: "Orders".into(),
            keys: json!({"id": id.to_string(), "user_id": user.to_string()}).to_string(),
            mod_type,
            shard: shard.to_string(),
        }
    }

    fn plan(&mut self) -> Vec<Planned> {
        let choice = self.rng.random_range(0..100);
        let existing: Vec<i64> = self.users.keys().copied().collect();
        let pick = |rng: &mut StdRng| {
            existing
                .get(rng.random_range(0..existing.len().max(1)))
                .copied()
        };
        let mut planned = Vec::new();
        match choice {
            // A new user with an order, in one transaction.
            0..=34 => {
                let id = self.next_user;
                self.next_user += 1;
                let shard = self.shards[self.rng.random_range(0..self.shards.len())].clone();
                let order = self.next_order;
                self.next_order += 1;
                let name = format!("user {id} \"quoted\" \\ ünï 🦀");
                planned.push(Planned::Write(
                    Mutation::new_insert_builder("Users")
                        .set("id")
                        .to(id)
                        .set("shard")
                        .to(shard.clone())
                        .set("name")
                        .to(name)
                        .set("score")
                        .to(id as f64 / 3.0)
                        .build(),
                    self.user_mod(id, "INSERT", &shard),
                ));
                planned.push(Planned::Write(
                    Mutation::new_insert_builder("Orders")
                        .set("user_id")
                        .to(id)
                        .set("id")
                        .to(order)
                        .set("shard")
                        .to(shard.clone())
                        .set("amount")
                        .to(Value::from(format!("{id}.{:02}", order % 100)))
                        .set("note")
                        .to(format!("order {order}"))
                        .build(),
                    self.order_mod(id, order, "INSERT", &shard),
                ));
                self.users.insert(
                    id,
                    User {
                        shard,
                        orders: vec![order],
                    },
                );
            }
            // Rename a user.
            35..=64 => {
                if let Some(id) = pick(&mut self.rng) {
                    let shard = self.users[&id].shard.clone();
                    let name = format!("renamed {} at {}", id, self.rng.random::<u32>());
                    planned.push(Planned::Write(
                        Mutation::new_update_builder("Users")
                            .set("id")
                            .to(id)
                            .set("shard")
                            .to(shard.clone())
                            .set("name")
                            .to(name)
                            .set("score")
                            .to(self.rng.random::<f64>())
                            .build(),
                        self.user_mod(id, "UPDATE", &shard),
                    ));
                }
            }
            // Another order for a user.
            65..=79 => {
                if let Some(id) = pick(&mut self.rng) {
                    let shard = self.users[&id].shard.clone();
                    let order = self.next_order;
                    self.next_order += 1;
                    planned.push(Planned::Write(
                        Mutation::new_insert_builder("Orders")
                            .set("user_id")
                            .to(id)
                            .set("id")
                            .to(order)
                            .set("shard")
                            .to(shard.clone())
                            .set("amount")
                            .to(Value::from("0.50".to_string()))
                            .set("note")
                            .to(Value::null())
                            .build(),
                        self.order_mod(id, order, "INSERT", &shard),
                    ));
                    if let Some(user) = self.users.get_mut(&id) {
                        user.orders.push(order);
                    }
                }
            }
            // Delete a user and its orders in one transaction.
            80..=91 => {
                if let Some(id) = pick(&mut self.rng)
                    && let Some(user) = self.users.remove(&id)
                {
                    for order in &user.orders {
                        planned.push(Planned::Write(
                            Mutation::delete(
                                "Orders",
                                KeySet::builder()
                                    .add_key(Key::new(vec![Value::from(id), Value::from(*order)]))
                                    .build(),
                            ),
                            self.order_mod(id, *order, "DELETE", &user.shard),
                        ));
                    }
                    planned.push(Planned::Write(
                        Mutation::delete(
                            "Users",
                            KeySet::builder()
                                .add_key(Key::new(vec![Value::from(id)]))
                                .build(),
                        ),
                        self.user_mod(id, "DELETE", &user.shard),
                    ));
                }
            }
            // A row of a table the session file does not know.
            _ => {
                let id = self.next_audit;
                self.next_audit += 1;
                planned.push(Planned::Write(
                    Mutation::new_insert_builder("Audit")
                        .set("id")
                        .to(id)
                        .set("msg")
                        .to(format!("audit {id}"))
                        .build(),
                    CommittedMod {
                        commit: (0, 0),
                        table: "Audit".into(),
                        keys: json!({"id": id.to_string()}).to_string(),
                        mod_type: "INSERT",
                        shard: "skip".into(),
                    },
                ));
            }
        }
        planned
    }

    /// Commits one random transaction; returns how many mods it wrote.
    pub async fn step(&mut self) -> Result<usize, ServiceError> {
        let planned = self.plan();
        if planned.is_empty() {
            return Ok(0);
        }
        let (mutations, mods): (Vec<Mutation>, Vec<CommittedMod>) = planned
            .into_iter()
            .map(|Planned::Write(m, c)| (m, c))
            .unzip();
        let result = self
            .client
            .read_write_transaction()
            .build()
            .run(async |transaction| {
                transaction.buffer(mutations.clone())?;
                Ok(())
            })
            .await
            .map_err(|e| ServiceError::Workload(format!("commit: {e}")))?;
        let commit = result
            .commit_timestamp()
            .ok_or_else(|| ServiceError::Workload("commit without a timestamp".into()))?;
        let count = mods.len();
        for mut m in mods {
            m.commit = (commit.seconds(), commit.nanos());
            self.committed.push(m);
        }
        Ok(count)
    }
}
