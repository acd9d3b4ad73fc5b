//! The generated model test (issue 11): random schemas and random Spanner transactions,
//! applied by the writer to a real MariaDB with windows and batches cut at random and the
//! writer's connection dropped or the writer killed at random points; afterwards every table
//! must equal a model that applies whole transactions in commit order.
//!
//! Each seed makes, deterministically:
//!
//! - a schema of 2–5 tables: one- or two-column primary keys (`INT`, `VARCHAR`), plain data
//!   columns, unique secondary indexes of one or two columns (nullable or `NOT NULL`), foreign
//!   keys to earlier tables — as data columns (nullable or not) or as the leading part of the
//!   key (interleaved) — with and without `ON DELETE CASCADE`, references of a table to itself,
//!   and tables with nothing but a key;
//! - Spanner transactions valid at commit (unique values distinct, every reference to an
//!   existing row): inserts, updates, unique values moved from one row to another, swapped and
//!   rotated, deletes that cascade (the cascaded deletes sometimes not in the stream, as MySQL's
//!   own `ON DELETE CASCADE` then does them), children re-pointed, rows deleted and inserted
//!   again in one transaction, keys re-inserted later; several records per transaction in
//!   shuffled order (a row's own records keep their order), sometimes more than one record per
//!   row; `NEW_ROW` or `NEW_ROW_AND_OLD_VALUES` records;
//! - commit times spread over 10-second windows, batches cut with random limits, and faults:
//!   the connection killed before a random statement, the checkpoint write, the `COMMIT` or
//!   right after it (the batch is then retried), or the writer killed (a new applier
//!   connects and starts the window again, with other batch cuts).
//!
//! After each window every table is compared with the model.
//!
//! `MODEL_SEEDS=N` runs seeds 1..=N (default 50; `MODEL_FIRST_SEED=F` starts at F instead),
//! `MODEL_SEED=s` only seed `s`. A failing seed prints its schema, the records of the window
//! and how to replay it. Beyond a few hundred seeds, run it with `cargo test` (nextest stops a
//! test after 5 minutes): `MODEL_SEEDS=2000 cargo test -p revrepl-writer --test model -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use revrepl_record::{
    ChangeRecord, Classify, ErrorClass, Mod, ModType, ShardId, Timestamp, Window,
};
use revrepl_test_services::MariaDb;
use revrepl_writer::apply::{FaultHook, FaultPoint};
use revrepl_writer::{ApplierConfig, BatchLimits, ShardApplier, SpannerTransaction, batches};
use serde_json::{Map, Value as Json, json};

#[path = "common/recorded_run.rs"]
mod recorded_run;
use recorded_run::fresh_database;

const SHARD: &str = "ls1";
/// 2023-11-14T22:13:20Z.
const BASE: i64 = 1_700_000_000;
const DEFAULT_SEEDS: u64 = 50;

// ---------------------------------------------------------------------------------------------
// Values and schemas

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    fn json(&self) -> Json {
        match self {
            Self::Null => Json::Null,
            Self::Int(n) => Json::String(n.to_string()),
            Self::Text(t) => Json::String(t.clone()),
        }
    }

    /// As MySQL shows it through `CAST(… AS CHAR)`.
    fn shown(&self) -> String {
        match self {
            Self::Null => "∅".into(),
            Self::Int(n) => n.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Int,
    Text,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: Type,
    nullable: bool,
}

#[derive(Debug, Clone)]
struct ForeignKey {
    /// Columns of the child (this table).
    columns: Vec<usize>,
    /// The parent table (may be this table).
    parent: usize,
    cascade: bool,
}

#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<Column>,
    key: Vec<usize>,
    uniques: Vec<Vec<usize>>,
    foreign_keys: Vec<ForeignKey>,
}

impl Table {
    fn is_key(&self, column: usize) -> bool {
        self.key.contains(&column)
    }

    /// Columns that are neither key nor foreign-key columns.
    fn plain(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|c| {
                !self.is_key(*c) && !self.foreign_keys.iter().any(|f| f.columns.contains(c))
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Schema {
    tables: Vec<Table>,
    collation: &'static str,
}

impl Schema {
    fn generate(rng: &mut StdRng) -> Self {
        let collation = if rng.random_bool(0.7) {
            "utf8mb4_bin"
        } else {
            "utf8mb4_general_ci"
        };
        let count = rng.random_range(2..=5);
        let mut tables: Vec<Table> = Vec::new();
        for t in 0..count {
            let mut columns = Vec::new();
            let mut key = Vec::new();
            let mut foreign_keys = Vec::new();
            // Interleaved in an earlier table: the parent's key leads this key.
            let interleaved = t > 0 && rng.random_bool(0.25);
            if interleaved {
                let parent = rng.random_range(0..t);
                let parent_table: &Table = &tables[parent];
                let mut fk_columns = Vec::new();
                for (i, &k) in parent_table.key.iter().enumerate() {
                    columns.push(Column {
                        name: format!("p{i}"),
                        ty: parent_table.columns[k].ty,
                        nullable: false,
                    });
                    key.push(columns.len() - 1);
                    fk_columns.push(columns.len() - 1);
                }
                columns.push(Column {
                    name: "k1".into(),
                    ty: Type::Int,
                    nullable: false,
                });
                key.push(columns.len() - 1);
                foreign_keys.push(ForeignKey {
                    columns: fk_columns,
                    parent,
                    cascade: rng.random_bool(0.7),
                });
            } else {
                columns.push(Column {
                    name: "k1".into(),
                    ty: Type::Int,
                    nullable: false,
                });
                key.push(0);
                if rng.random_bool(0.35) {
                    columns.push(Column {
                        name: "k2".into(),
                        ty: Type::Text,
                        nullable: false,
                    });
                    key.push(1);
                }
            }
            let key_only = rng.random_bool(0.15);
            if !key_only {
                for d in 0..rng.random_range(1..=3) {
                    columns.push(Column {
                        name: format!("c{d}"),
                        ty: if rng.random_bool(0.5) {
                            Type::Int
                        } else {
                            Type::Text
                        },
                        nullable: rng.random_bool(0.5),
                    });
                }
                // References to earlier tables, as data columns.
                if t > 0 && rng.random_bool(0.6) {
                    let parent = rng.random_range(0..t);
                    let nullable = rng.random_bool(0.6);
                    let mut fk_columns = Vec::new();
                    let parent_table: &Table = &tables[parent];
                    for (i, &k) in parent_table.key.iter().enumerate() {
                        columns.push(Column {
                            name: format!("r{parent}_{i}"),
                            ty: parent_table.columns[k].ty,
                            nullable,
                        });
                        fk_columns.push(columns.len() - 1);
                    }
                    foreign_keys.push(ForeignKey {
                        columns: fk_columns,
                        parent,
                        cascade: rng.random_bool(0.5),
                    });
                }
            }
            let mut table = Table {
                name: format!("t{t}"),
                columns,
                key,
                uniques: Vec::new(),
                foreign_keys,
            };
            // A reference to itself.
            if !key_only && rng.random_bool(0.3) {
                let mut fk_columns = Vec::new();
                for (i, &k) in table.key.clone().iter().enumerate() {
                    table.columns.push(Column {
                        name: format!("up{i}"),
                        ty: table.columns[k].ty,
                        nullable: true,
                    });
                    fk_columns.push(table.columns.len() - 1);
                }
                table.foreign_keys.push(ForeignKey {
                    columns: fk_columns,
                    parent: t,
                    cascade: rng.random_bool(0.5),
                });
            }
            let plain = table.plain();
            if !plain.is_empty() {
                for _ in 0..rng.random_range(0..=2) {
                    let size = rng.random_range(1..=plain.len().min(2));
                    let mut columns: Vec<usize> =
                        plain.choose_multiple(rng, size).copied().collect();
                    columns.sort_unstable();
                    if !table.uniques.contains(&columns) {
                        table.uniques.push(columns);
                    }
                }
            }
            tables.push(table);
        }
        Self { tables, collation }
    }

    fn ddl(&self) -> Vec<String> {
        let mut out = Vec::new();
        for table in &self.tables {
            let mut parts: Vec<String> = table
                .columns
                .iter()
                .map(|c| {
                    let ty = match c.ty {
                        Type::Int => "INT".to_string(),
                        Type::Text => "VARCHAR(8)".to_string(),
                    };
                    let null = if c.nullable { "NULL" } else { "NOT NULL" };
                    format!("`{}` {ty} {null}", c.name)
                })
                .collect();
            let names = |columns: &[usize]| -> String {
                columns
                    .iter()
                    .map(|&c| format!("`{}`", table.columns[c].name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            parts.push(format!("PRIMARY KEY ({})", names(&table.key)));
            for (i, unique) in table.uniques.iter().enumerate() {
                parts.push(format!("UNIQUE KEY `u{i}` ({})", names(unique)));
            }
            for (i, fk) in table.foreign_keys.iter().enumerate() {
                let parent = &self.tables[fk.parent];
                let referenced: Vec<String> = parent
                    .key
                    .iter()
                    .map(|&k| format!("`{}`", parent.columns[k].name))
                    .collect();
                parts.push(format!(
                    "CONSTRAINT `fk_{}_{i}` FOREIGN KEY ({}) REFERENCES `{}` ({}) ON DELETE {}",
                    table.name,
                    names(&fk.columns),
                    parent.name,
                    referenced.join(", "),
                    if fk.cascade { "CASCADE" } else { "RESTRICT" }
                ));
            }
            out.push(format!(
                "CREATE TABLE `{}` (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={}",
                table.name,
                parts.join(",\n  "),
                self.collation
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The model: Spanner's state, transaction by transaction

type Row = Vec<Val>;
type Key = Vec<Val>;
type State = Vec<BTreeMap<Key, Row>>;

fn key_of(table: &Table, row: &Row) -> Key {
    table.key.iter().map(|&k| row[k].clone()).collect()
}

/// The key a foreign key of `row` references, if none of its columns is NULL.
fn reference(fk: &ForeignKey, row: &Row) -> Option<Key> {
    let key: Key = fk.columns.iter().map(|&c| row[c].clone()).collect();
    (!key.contains(&Val::Null)).then_some(key)
}

/// One Spanner transaction being made.
struct Maker<'a> {
    schema: &'a Schema,
    rng: &'a mut StdRng,
    next: State,
    /// Rows touched, with how: explicitly deleted rows whose delete Spanner cascaded (may be
    /// left out of the stream).
    touched: BTreeMap<(usize, Key), Touch>,
    fresh: &'a mut i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Touch {
    /// Deleted by an `ON DELETE CASCADE` of a deleted parent.
    cascaded: bool,
    /// Deleted and inserted again.
    reinserted: bool,
}

impl Maker<'_> {
    fn random_value(&mut self, column: &Column) -> Val {
        if column.nullable && self.rng.random_bool(0.2) {
            return Val::Null;
        }
        match column.ty {
            Type::Int => Val::Int(self.rng.random_range(0..6)),
            Type::Text => Val::Text(
                ["a", "b", "c", "d", "e", "f"]
                    .choose(self.rng)
                    .unwrap_or(&"a")
                    .to_string(),
            ),
        }
    }

    fn fresh_value(&mut self, column: &Column) -> Val {
        *self.fresh += 1;
        match column.ty {
            Type::Int => Val::Int(100 + *self.fresh),
            Type::Text => Val::Text(format!("z{}", *self.fresh)),
        }
    }

    fn random_key_value(&mut self, column: &Column) -> Val {
        match column.ty {
            Type::Int => Val::Int(self.rng.random_range(1..=9)),
            Type::Text => Val::Text(["k", "m", "n"].choose(self.rng).unwrap_or(&"k").to_string()),
        }
    }

    fn touch(&mut self, table: usize, key: Key) -> &mut Touch {
        self.touched.entry((table, key)).or_default()
    }

    /// An existing row of `parent` to reference, avoiding `avoid`.
    fn pick_parent(&mut self, parent: usize, avoid: &BTreeSet<(usize, Key)>) -> Option<Key> {
        let keys: Vec<Key> = self.next[parent]
            .keys()
            .filter(|k| !avoid.contains(&(parent, (*k).clone())))
            .cloned()
            .collect();
        keys.choose(self.rng).cloned()
    }

    /// Fills the row's references: an existing parent, or NULL where allowed. `None` when a
    /// reference that cannot be NULL has no parent.
    fn fill_references(&mut self, t: usize, row: &mut Row, skip_key_columns: bool) -> Option<()> {
        let table = &self.schema.tables[t];
        for fk in table.foreign_keys.clone() {
            if skip_key_columns && fk.columns.iter().any(|c| table.is_key(*c)) {
                continue;
            }
            let nullable = fk.columns.iter().all(|&c| table.columns[c].nullable);
            let self_key = key_of(table, row);
            let mut avoid = BTreeSet::new();
            if fk.parent == t {
                // Not itself (a row referencing itself is legal, but keep it simple).
                avoid.insert((t, self_key));
            }
            let parent = if nullable && self.rng.random_bool(0.3) {
                None
            } else {
                self.pick_parent(fk.parent, &avoid)
            };
            match parent {
                Some(parent) => {
                    for (&c, v) in fk.columns.iter().zip(parent) {
                        row[c] = v;
                    }
                }
                None if nullable => {
                    for &c in &fk.columns {
                        row[c] = Val::Null;
                    }
                }
                None => return None,
            }
        }
        Some(())
    }

    fn insert(&mut self) {
        let t = self.rng.random_range(0..self.schema.tables.len());
        let table = self.schema.tables[t].clone();
        let mut row: Row = vec![Val::Null; table.columns.len()];
        // Key: an interleaved table's key starts with its parent's.
        let interleaved = table
            .foreign_keys
            .iter()
            .find(|f| f.columns.iter().all(|c| table.is_key(*c)) && f.parent != t)
            .cloned();
        if let Some(fk) = &interleaved {
            let Some(parent) = self.pick_parent(fk.parent, &BTreeSet::new()) else {
                return;
            };
            for (&c, v) in fk.columns.iter().zip(parent) {
                row[c] = v;
            }
        }
        for &k in &table.key {
            if row[k] == Val::Null {
                row[k] = self.random_key_value(&table.columns[k]);
            }
        }
        let key = key_of(&table, &row);
        if self.next[t].contains_key(&key) {
            return;
        }
        for c in table.plain() {
            row[c] = self.random_value(&table.columns[c]);
        }
        if self.fill_references(t, &mut row, true).is_none() {
            return;
        }
        self.next[t].insert(key.clone(), row);
        self.touch(t, key);
    }

    fn random_row(&mut self, t: usize) -> Option<Key> {
        let keys: Vec<Key> = self.next[t].keys().cloned().collect();
        keys.choose(self.rng).cloned()
    }

    fn update(&mut self) {
        let t = self.rng.random_range(0..self.schema.tables.len());
        let table = self.schema.tables[t].clone();
        let Some(key) = self.random_row(t) else {
            return;
        };
        let mut row = self.next[t][&key].clone();
        for c in table.plain() {
            if self.rng.random_bool(0.6) {
                row[c] = self.random_value(&table.columns[c]);
            }
        }
        if self.rng.random_bool(0.4) {
            let before = row.clone();
            if self.fill_references(t, &mut row, true).is_none() {
                row = before;
            }
        }
        self.next[t].insert(key.clone(), row);
        self.touch(t, key);
    }

    /// Row `a` takes the unique value of row `b`; `b` gets `a`'s (a swap), a new value, or
    /// is deleted.
    fn take_unique(&mut self) {
        let candidates: Vec<usize> = (0..self.schema.tables.len())
            .filter(|&t| !self.schema.tables[t].uniques.is_empty() && self.next[t].len() >= 2)
            .collect();
        let Some(&t) = candidates.choose(self.rng) else {
            return;
        };
        let table = self.schema.tables[t].clone();
        let Some(unique) = table.uniques.choose(self.rng).cloned() else {
            return;
        };
        let keys: Vec<Key> = self.next[t].keys().cloned().collect();
        let chosen: Vec<Key> = keys.choose_multiple(self.rng, 2).cloned().collect();
        let (a, b) = (chosen[0].clone(), chosen[1].clone());
        let row_a = self.next[t][&a].clone();
        let row_b = self.next[t][&b].clone();
        let mut new_a = row_a.clone();
        for &c in &unique {
            new_a[c] = row_b[c].clone();
        }
        let mut new_b = row_b;
        match self.rng.random_range(0..3) {
            0 => {
                for &c in &unique {
                    new_b[c] = row_a[c].clone();
                }
            }
            1 => {
                for &c in &unique {
                    new_b[c] = self.fresh_value(&table.columns[c]);
                }
            }
            _ => {
                self.next[t].insert(a.clone(), new_a);
                self.touch(t, a);
                self.delete_row(t, b, false);
                return;
            }
        }
        self.next[t].insert(a.clone(), new_a);
        self.next[t].insert(b.clone(), new_b);
        self.touch(t, a);
        self.touch(t, b);
    }

    /// Three rows of a table rotate their unique values.
    fn rotate(&mut self) {
        let candidates: Vec<usize> = (0..self.schema.tables.len())
            .filter(|&t| !self.schema.tables[t].uniques.is_empty() && self.next[t].len() >= 3)
            .collect();
        let Some(&t) = candidates.choose(self.rng) else {
            return;
        };
        let table = self.schema.tables[t].clone();
        let unique = table.uniques[0].clone();
        let keys: Vec<Key> = self.next[t].keys().cloned().collect();
        let chosen: Vec<Key> = keys.choose_multiple(self.rng, 3).cloned().collect();
        let rows: Vec<Row> = chosen.iter().map(|k| self.next[t][k].clone()).collect();
        for i in 0..3 {
            let mut row = rows[i].clone();
            for &c in &unique {
                row[c] = rows[(i + 1) % 3][c].clone();
            }
            self.next[t].insert(chosen[i].clone(), row);
            self.touch(t, chosen[i].clone());
        }
    }

    /// Deletes a row and what references it: `ON DELETE CASCADE` children go with it
    /// (`cascaded`), others are deleted explicitly or pointed elsewhere.
    fn delete_row(&mut self, t: usize, key: Key, cascaded: bool) {
        let Some(_) = self.next[t].remove(&key) else {
            return;
        };
        let touch = self.touch(t, key.clone());
        touch.cascaded = cascaded;
        for (child, child_table) in self.schema.tables.clone().iter().enumerate() {
            for fk in child_table.foreign_keys.iter().filter(|f| f.parent == t) {
                let referencing: Vec<Key> = self.next[child]
                    .iter()
                    .filter(|(_, row)| reference(fk, row).as_ref() == Some(&key))
                    .map(|(k, _)| k.clone())
                    .collect();
                for child_key in referencing {
                    if fk.cascade {
                        self.delete_row(child, child_key, true);
                        continue;
                    }
                    let in_key = fk.columns.iter().any(|c| child_table.is_key(*c));
                    let nullable = fk.columns.iter().all(|&c| child_table.columns[c].nullable);
                    let mut avoid = BTreeSet::new();
                    avoid.insert((t, key.clone()));
                    if fk.parent == child {
                        avoid.insert((child, child_key.clone()));
                    }
                    let other = if in_key || self.rng.random_bool(0.4) {
                        None
                    } else {
                        self.pick_parent(t, &avoid)
                    };
                    if let Some(row) = self.next[child].get_mut(&child_key) {
                        if let Some(other) = other {
                            for (&c, v) in fk.columns.iter().zip(other) {
                                row[c] = v;
                            }
                            self.touch(child, child_key);
                            continue;
                        }
                        if nullable && !in_key && self.rng.random_bool(0.5) {
                            for &c in &fk.columns {
                                row[c] = Val::Null;
                            }
                            self.touch(child, child_key);
                            continue;
                        }
                    }
                    self.delete_row(child, child_key, false);
                }
            }
        }
    }

    fn delete(&mut self) {
        let t = self.rng.random_range(0..self.schema.tables.len());
        if let Some(key) = self.random_row(t) {
            self.delete_row(t, key, false);
        }
    }

    /// A row deleted and inserted again under its key, with new values.
    fn reinsert(&mut self) {
        let t = self.rng.random_range(0..self.schema.tables.len());
        let table = self.schema.tables[t].clone();
        let Some(key) = self.random_row(t) else {
            return;
        };
        let mut row = self.next[t][&key].clone();
        self.delete_row(t, key.clone(), false);
        for c in table.plain() {
            row[c] = self.random_value(&table.columns[c]);
        }
        // Its parents may have gone with it (a reference to itself, a cycle).
        if self.fill_references(t, &mut row, true).is_none() {
            return;
        }
        if table
            .foreign_keys
            .iter()
            .filter(|f| f.columns.iter().any(|c| table.is_key(*c)))
            .any(|f| reference(f, &row).is_some_and(|p| !self.next[f.parent].contains_key(&p)))
        {
            return;
        }
        self.next[t].insert(key.clone(), row);
        self.touch(t, key).reinserted = true;
    }

    /// Gives rows changed by this transaction fresh values where unique values collide.
    fn repair_uniques(&mut self) {
        for (t, table) in self.schema.tables.clone().iter().enumerate() {
            for unique in &table.uniques {
                let mut seen: BTreeMap<Vec<Val>, Key> = BTreeMap::new();
                // Untouched rows first: they keep their values.
                let mut keys: Vec<Key> = self.next[t].keys().cloned().collect();
                keys.sort_by_key(|k| self.touched.contains_key(&(t, k.clone())));
                for key in keys {
                    let row = &self.next[t][&key];
                    let tuple: Vec<Val> = unique.iter().map(|&c| row[c].clone()).collect();
                    if tuple.contains(&Val::Null) {
                        continue;
                    }
                    if let std::collections::btree_map::Entry::Vacant(slot) = seen.entry(tuple) {
                        slot.insert(key);
                    } else {
                        let column = unique[self.rng.random_range(0..unique.len())];
                        let value = if table.columns[column].nullable && self.rng.random_bool(0.3) {
                            Val::Null
                        } else {
                            self.fresh_value(&table.columns[column])
                        };
                        if let Some(row) = self.next[t].get_mut(&key) {
                            row[column] = value;
                        }
                        self.touch(t, key);
                    }
                }
            }
        }
    }
}

/// Checks the state against the schema's constraints (the generator's own invariant).
fn check(schema: &Schema, state: &State) -> Result<(), String> {
    for (t, table) in schema.tables.iter().enumerate() {
        for unique in &table.uniques {
            let mut seen = BTreeSet::new();
            for row in state[t].values() {
                let tuple: Vec<Val> = unique.iter().map(|&c| row[c].clone()).collect();
                if !tuple.contains(&Val::Null) && !seen.insert(tuple.clone()) {
                    return Err(format!("{}: duplicate {tuple:?}", table.name));
                }
            }
        }
        for fk in &table.foreign_keys {
            for row in state[t].values() {
                if let Some(parent) = reference(fk, row)
                    && !state[fk.parent].contains_key(&parent)
                {
                    return Err(format!("{}: dangling {parent:?}", table.name));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    NewRow,
    NewRowAndOldValues,
}

/// One record as made: table, kind, keys, new values, old values (JSON texts).
type Emitted = (String, ModType, String, String, String);

struct Emitter<'a> {
    schema: &'a Schema,
    capture: Capture,
}

impl Emitter<'_> {
    fn keys(&self, table: &Table, row_key: &Key) -> String {
        let mut map = Map::new();
        for (&k, v) in table.key.iter().zip(row_key) {
            map.insert(table.columns[k].name.clone(), v.json());
        }
        Json::Object(map).to_string()
    }

    fn values(&self, table: &Table, row: &Row, only: Option<&[usize]>) -> String {
        let mut map = Map::new();
        for (c, column) in table.columns.iter().enumerate() {
            if table.is_key(c) || only.is_some_and(|o| !o.contains(&c)) {
                continue;
            }
            map.insert(column.name.clone(), row[c].json());
        }
        Json::Object(map).to_string()
    }

    fn record(
        &self,
        t: usize,
        kind: ModType,
        key: &Key,
        new: Option<&Row>,
        old: Option<&Row>,
    ) -> Emitted {
        let table = &self.schema.tables[t];
        let new_values = new.map_or_else(|| "{}".to_string(), |row| self.values(table, row, None));
        let old_values = match (self.capture, old) {
            (Capture::NewRowAndOldValues, Some(old)) => match (kind, new) {
                (ModType::Update, Some(new)) => {
                    let modified: Vec<usize> = (0..table.columns.len())
                        .filter(|&c| old[c] != new[c])
                        .collect();
                    self.values(table, old, Some(&modified))
                }
                _ => self.values(table, old, None),
            },
            _ => "{}".to_string(),
        };
        (
            table.name.clone(),
            kind,
            self.keys(table, key),
            new_values,
            old_values,
        )
    }
}

/// The records of one transaction: per touched row, from its state before and after.
fn records_of(
    emitter: &Emitter<'_>,
    rng: &mut StdRng,
    before: &State,
    after: &State,
    touched: &BTreeMap<(usize, Key), Touch>,
) -> Vec<Emitted> {
    let mut per_row: Vec<Vec<Emitted>> = Vec::new();
    for ((t, key), touch) in touched {
        let old = before[*t].get(key);
        let new = after[*t].get(key);
        let mut own = Vec::new();
        match (old, new) {
            (None, Some(new)) => {
                if rng.random_bool(0.15) {
                    // Written twice in the transaction: the stream may show both.
                    let mut first = new.clone();
                    let table = &emitter.schema.tables[*t];
                    for c in table.plain() {
                        if table.columns[c].nullable {
                            first[c] = Val::Null;
                        }
                    }
                    own.push(emitter.record(*t, ModType::Insert, key, Some(&first), None));
                    own.push(emitter.record(*t, ModType::Update, key, Some(new), Some(&first)));
                } else {
                    own.push(emitter.record(*t, ModType::Insert, key, Some(new), None));
                }
            }
            (Some(old), None) => {
                // A cascaded delete may be missing from the stream: MySQL's own cascade
                // does it.
                if !(touch.cascaded && rng.random_bool(0.3)) {
                    own.push(emitter.record(*t, ModType::Delete, key, None, Some(old)));
                }
            }
            (Some(old), Some(new)) => {
                if touch.reinserted || rng.random_bool(0.05) {
                    own.push(emitter.record(*t, ModType::Delete, key, None, Some(old)));
                    own.push(emitter.record(*t, ModType::Insert, key, Some(new), None));
                } else {
                    own.push(emitter.record(*t, ModType::Update, key, Some(new), Some(old)));
                }
            }
            (None, None) => {
                if rng.random_bool(0.3) {
                    // Inserted and deleted again: values of the right types.
                    let table = &emitter.schema.tables[*t];
                    let mut row: Row = table
                        .columns
                        .iter()
                        .map(|c| match (c.nullable, c.ty) {
                            (true, _) => Val::Null,
                            (false, Type::Int) => Val::Int(rng.random_range(0..6)),
                            (false, Type::Text) => Val::Text("q".into()),
                        })
                        .collect();
                    for (&k, v) in table.key.iter().zip(key) {
                        row[k] = v.clone();
                    }
                    own.push(emitter.record(*t, ModType::Insert, key, Some(&row), None));
                    own.push(emitter.record(*t, ModType::Delete, key, None, Some(&row)));
                }
            }
        }
        if !own.is_empty() {
            per_row.push(own);
        }
    }
    // Shuffled across rows; a row's own records keep their order.
    let mut slots: Vec<usize> = per_row
        .iter()
        .enumerate()
        .flat_map(|(i, own)| std::iter::repeat_n(i, own.len()))
        .collect();
    slots.shuffle(rng);
    let mut queues: Vec<std::collections::VecDeque<_>> =
        per_row.into_iter().map(Into::into).collect();
    slots
        .into_iter()
        .filter_map(|i| queues[i].pop_front())
        .collect()
}

/// Puts back the cascaded deletes left out of the stream that MySQL's own cascade would not do:
/// when a parent that cascades to the row is not deleted in MySQL (it is written again in the
/// transaction), or when other rows reference the row (MySQL's cascade could meet a `RESTRICT`
/// before it reaches them).
fn restore_needed_cascades(
    emitter: &Emitter<'_>,
    records: &mut Vec<Emitted>,
    before: &State,
    after: &State,
    touched: &BTreeMap<(usize, Key), Touch>,
) {
    let _ = after;
    let present: BTreeSet<(String, String)> = records
        .iter()
        .map(|(table, _, keys, _, _)| (table.clone(), keys.clone()))
        .collect();
    for (t, key) in touched.keys() {
        let table = &emitter.schema.tables[*t];
        let keys = emitter.keys(table, key);
        if present.contains(&(table.name.clone(), keys)) {
            continue;
        }
        let (Some(old), None) = (before[*t].get(key), after[*t].get(key)) else {
            continue;
        };
        // Left out: every parent that cascaded it must be deleted in MySQL by a delete record,
        // i.e. absent at commit.
        let parent_gone = table.foreign_keys.iter().filter(|f| f.cascade).any(|f| {
            reference(f, old).is_some_and(|p| {
                before[f.parent].contains_key(&p) && !after[f.parent].contains_key(&p)
            })
        });
        let parent_kept = table
            .foreign_keys
            .iter()
            .any(|f| reference(f, old).is_some_and(|p| after[f.parent].contains_key(&p)));
        // MySQL cascades row by row and checks RESTRICT references at once (Spanner at
        // commit): only rows nothing references are left to its cascade.
        let referenced = emitter.schema.tables.iter().enumerate().any(|(c, child)| {
            child.foreign_keys.iter().any(|f| {
                f.parent == *t
                    && before[c]
                        .values()
                        .any(|row| reference(f, row).as_ref() == Some(key))
            })
        });
        // Nor a row whose RESTRICT reference points to a row deleted too: MySQL refuses that
        // delete while the row is there, and only the cascade would remove it.
        let restricts = table
            .foreign_keys
            .iter()
            .filter(|f| !f.cascade)
            .any(|f| reference(f, old).is_some_and(|p| !after[f.parent].contains_key(&p)));
        if !parent_gone || parent_kept || referenced || restricts {
            records.push(emitter.record(*t, ModType::Delete, key, None, Some(old)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running one seed

struct Seed {
    seed: u64,
    schema: Schema,
    capture: Capture,
    /// Per window: the transactions' records, in commit order.
    windows: Vec<(Window, Vec<ChangeRecord>, State)>,
    transactions: usize,
    records: usize,
}

fn window_at(index: i64) -> Window {
    Window::from_bounds(
        Timestamp::new(BASE + 10 * index, 0).expect("valid start"),
        Timestamp::new(BASE + 10 * index + 10, 0).expect("valid end"),
    )
    .expect("valid window")
}

fn generate(seed: u64) -> Seed {
    let mut rng = StdRng::seed_from_u64(seed);
    let schema = Schema::generate(&mut rng);
    let capture = if rng.random_bool(0.5) {
        Capture::NewRow
    } else {
        Capture::NewRowAndOldValues
    };
    let emitter = Emitter {
        schema: &schema,
        capture,
    };
    let mut state: State = vec![BTreeMap::new(); schema.tables.len()];
    let mut fresh = 0i64;
    let mut windows: Vec<(Window, Vec<ChangeRecord>, State)> = Vec::new();
    let mut transactions = 0;
    let mut records_total = 0;
    let window_count = rng.random_range(3..=6);
    for w in 0..window_count {
        let window = window_at(w);
        let mut records = Vec::new();
        let in_window = rng.random_range(4..=16);
        let mut offsets: Vec<i64> = (0..in_window)
            .map(|_| rng.random_range(0..10_000))
            .collect();
        offsets.sort_unstable();
        for (i, offset_ms) in offsets.into_iter().enumerate() {
            let mut maker = Maker {
                schema: &schema,
                rng: &mut rng,
                next: state.clone(),
                touched: BTreeMap::new(),
                fresh: &mut fresh,
            };
            let actions = maker.rng.random_range(1..=6);
            for _ in 0..actions {
                match maker.rng.random_range(0..100) {
                    0..=34 => maker.insert(),
                    35..=54 => maker.update(),
                    55..=69 => maker.take_unique(),
                    70..=74 => maker.rotate(),
                    75..=89 => maker.delete(),
                    _ => maker.reinsert(),
                }
            }
            maker.repair_uniques();
            let Maker { next, touched, .. } = maker;
            if let Err(e) = check(&schema, &next) {
                panic!("seed {seed}: the generator made an invalid state: {e}");
            }
            let mut made = records_of(&emitter, &mut rng, &state, &next, &touched);
            restore_needed_cascades(&emitter, &mut made, &state, &next, &touched);
            if made.is_empty() {
                state = next;
                continue;
            }
            let count = made.len();
            let txid = format!("w{w}t{i:03}");
            let millis = offset_ms;
            for (sequence, (table, kind, keys, new_values, old_values)) in
                made.into_iter().enumerate()
            {
                let nanos = u32::try_from((millis % 1_000) * 1_000_000).expect("small");
                records.push(ChangeRecord {
                    commit_timestamp: Timestamp::new(BASE + 10 * w + millis / 1_000, nanos)
                        .expect("valid timestamp"),
                    server_transaction_id: txid.clone(),
                    record_sequence: format!("{sequence:08}"),
                    table_name: table,
                    mods: [Mod {
                        keys_json: keys,
                        old_values_json: old_values,
                        new_values_json: new_values,
                    }],
                    mod_type: kind,
                    number_of_records_in_transaction: count as u64,
                    transaction_tag: String::new(),
                    shard: SHARD.into(),
                });
            }
            transactions += 1;
            records_total += count;
            state = next;
        }
        // The window file's lines in any order, as the reference writes them.
        records.shuffle(&mut rng);
        windows.push((window, records, state.clone()));
    }
    Seed {
        seed,
        schema,
        capture,
        windows,
        transactions,
        records: records_total,
    }
}

/// Every row of every table as text, `∅` for NULL.
async fn mysql_state(conn: &mut Conn, schema: &Schema) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    for table in &schema.tables {
        let parts: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("IFNULL(CAST(`{}` AS CHAR), '∅')", c.name))
            .collect();
        let sql = format!(
            "SELECT CONCAT_WS('|', {}) FROM `{}`",
            parts.join(", "),
            table.name
        );
        let rows: Vec<String> = conn.query(sql).await.expect("read table");
        out.push(rows.into_iter().collect());
    }
    out
}

fn model_state(schema: &Schema, state: &State) -> Vec<BTreeSet<String>> {
    schema
        .tables
        .iter()
        .zip(state)
        .map(|(_, rows)| {
            rows.values()
                .map(|row| row.iter().map(Val::shown).collect::<Vec<_>>().join("|"))
                .collect()
        })
        .collect()
}

/// The records of `transactions`, one a line.
fn show(transactions: &[SpannerTransaction]) -> String {
    let mut shown = String::new();
    for transaction in transactions {
        let _ = writeln!(
            shown,
            "  transaction {}:",
            transaction.server_transaction_id()
        );
        for r in transaction.records() {
            let m = r.the_mod();
            let _ = writeln!(
                shown,
                "    {:?} {} keys {} new {} old {}",
                r.mod_type, r.table_name, m.keys_json, m.new_values_json, m.old_values_json
            );
        }
    }
    shown
}

fn describe(seed: &Seed) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "seed {}: {} transactions, {} records, {:?}, collation {}",
        seed.seed, seed.transactions, seed.records, seed.capture, seed.schema.collation
    );
    for ddl in seed.schema.ddl() {
        let _ = writeln!(out, "{ddl};");
    }
    out
}

#[derive(Default, Debug)]
struct Stats {
    batches: usize,
    faults: usize,
    kills: usize,
    statements: usize,
    /// Transactions the writer had to apply row by row.
    resolved: usize,
}

async fn connect(opts: &Opts) -> ShardApplier {
    let config = ApplierConfig::new("model", ShardId::new(SHARD).expect("valid"), opts.clone());
    ShardApplier::connect(config)
        .await
        .expect("applier connects")
}

/// Runs one seed; `Err` describes the first difference.
async fn run_seed(server: &MariaDb, seed: u64, stats: &mut Stats) -> Result<(), String> {
    let made = generate(seed);
    let database = format!("model_{seed}");
    let (mut admin, opts) = fresh_database(&server.url(), &database, &made.schema.ddl())
        .await
        .map_err(|e| format!("{}\nDDL failed: {e}", describe(&made)))?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut applier = connect(&opts).await;
    for (index, (window, records, expected)) in made.windows.iter().enumerate() {
        let transactions = SpannerTransaction::group(records.clone());
        // The window is applied from its start until it is done; a killed writer starts it
        // again (the checkpoint skips what was applied) with other batch cuts.
        'window: loop {
            let limits = BatchLimits {
                max_records: rng.random_range(1..=24),
                max_bytes: if rng.random_bool(0.2) {
                    rng.random_range(200..2_000)
                } else {
                    usize::MAX
                },
            };
            for batch in batches(&transactions, limits) {
                loop {
                    stats.batches += 1;
                    let fault = rng.random_bool(0.3);
                    let kill_writer = fault && rng.random_bool(0.4);
                    if fault {
                        let at = rng.random_range(0..12usize);
                        let counter = Arc::new(AtomicUsize::new(0));
                        let hook: FaultHook = Arc::new(move |point: FaultPoint| {
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            n == at || (at >= 10 && point == FaultPoint::Committed)
                        });
                        applier.set_fault_hook(Some(hook));
                    } else {
                        applier.set_fault_hook(None);
                    }
                    let outcome = applier.apply_batch(*window, batch).await;
                    applier.set_fault_hook(None);
                    match outcome {
                        Ok(outcome) => {
                            stats.statements += outcome.statements;
                            stats.resolved += outcome.resolved_transactions;
                            break;
                        }
                        Err(error) if error.class() == ErrorClass::Transient && fault => {
                            stats.faults += 1;
                            if kill_writer {
                                stats.kills += 1;
                                drop(applier);
                                applier = connect(&opts).await;
                                continue 'window;
                            }
                        }
                        Err(error) => {
                            return Err(format!(
                                "{}window {index}: the writer failed ({:?}): {error}\nrecords of the window:\n{}",
                                describe(&made),
                                error.class(),
                                show(&transactions)
                            ));
                        }
                    }
                }
            }
            break;
        }
        let mut conn = Conn::new(opts.clone()).await.expect("connect reader");
        let actual = mysql_state(&mut conn, &made.schema).await;
        conn.disconnect().await.expect("disconnect");
        let wanted = model_state(&made.schema, expected);
        if actual != wanted {
            let mut diff = String::new();
            for (t, table) in made.schema.tables.iter().enumerate() {
                let missing: Vec<&String> = wanted[t].difference(&actual[t]).collect();
                let extra: Vec<&String> = actual[t].difference(&wanted[t]).collect();
                if !missing.is_empty() || !extra.is_empty() {
                    let _ = writeln!(
                        diff,
                        "  {}: missing in MySQL {missing:?}, not in the model {extra:?}",
                        table.name
                    );
                }
            }
            return Err(format!(
                "{}window {index}: MySQL differs from the model:\n{diff}records of the window:\n{}",
                describe(&made),
                show(&transactions)
            ));
        }
    }
    applier.close().await;
    admin
        .query_drop(format!("DROP DATABASE `{database}`"))
        .await
        .expect("drop database");
    admin.disconnect().await.expect("disconnect");
    Ok(())
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("MODEL_SEED") {
        return vec![seed.trim().parse().expect("MODEL_SEED is a number")];
    }
    let number = |name: &str| {
        std::env::var(name).ok().map(|n| {
            n.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
    };
    let count = number("MODEL_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = number("MODEL_FIRST_SEED").unwrap_or(1);
    (first..first + count).collect()
}

#[tokio::test]
async fn model_random_schemas_and_transactions_end_like_the_model() {
    let server = MariaDb::start().expect("mariadb starts");
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let seeds = seeds();
    for &seed in &seeds {
        if let Err(report) = run_seed(&server, seed, &mut stats).await {
            eprintln!(
                "{report}\nreplay: MODEL_SEED={seed} cargo nextest run -p revrepl-writer --test model\n"
            );
            failures.push(seed);
        }
    }
    eprintln!(
        "model: {} seeds in {:.1} s: {} batches, {} statements, {} transactions resolved row by \
         row, {} connections dropped ({} writer kills)",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        stats.batches,
        stats.statements,
        stats.resolved,
        stats.faults,
        stats.kills
    );
    assert!(
        failures.is_empty(),
        "seeds {failures:?} failed (reports above); replay one with MODEL_SEED=<seed> cargo nextest run -p revrepl-writer --test model"
    );
    if seeds.len() >= 10 {
        // The seeds must reach the row-by-row path and the faults, or they prove less.
        assert!(
            stats.resolved > 0 && stats.faults > 0 && stats.kills > 0,
            "{stats:?}"
        );
    }
}

/// The generator itself: every seed's transactions keep the constraints, and the seeds cover
/// what the test claims (runs without a database).
#[test]
fn model_generator_covers_the_cases() {
    let mut interleaved = 0;
    let mut self_references = 0;
    let mut cascades = 0;
    let mut restricts = 0;
    let mut uniques = 0;
    let mut key_only = 0;
    let mut composite = 0;
    let mut multi_record_rows = 0;
    for seed in 1..=DEFAULT_SEEDS {
        let made = generate(seed);
        for (t, table) in made.schema.tables.iter().enumerate() {
            interleaved += usize::from(
                table
                    .foreign_keys
                    .iter()
                    .any(|f| f.columns.iter().all(|c| table.is_key(*c))),
            );
            self_references += usize::from(table.foreign_keys.iter().any(|f| f.parent == t));
            cascades += table.foreign_keys.iter().filter(|f| f.cascade).count();
            restricts += table.foreign_keys.iter().filter(|f| !f.cascade).count();
            uniques += table.uniques.len();
            key_only += usize::from(table.columns.len() == table.key.len());
            composite += usize::from(table.key.len() > 1);
        }
        for (_, records, _) in &made.windows {
            for transaction in SpannerTransaction::group(records.clone()) {
                let mut seen = BTreeSet::new();
                for r in transaction.records() {
                    if !seen.insert((r.table_name.clone(), r.the_mod().keys_json.clone())) {
                        multi_record_rows += 1;
                    }
                }
            }
        }
    }
    let counts = json!({
        "interleaved": interleaved, "self_references": self_references, "cascades": cascades,
        "restricts": restricts, "uniques": uniques, "key_only": key_only,
        "composite": composite, "multi_record_rows": multi_record_rows
    });
    for (name, count) in counts.as_object().expect("object") {
        assert!(count.as_u64().unwrap_or(0) > 0, "no {name} in {counts}");
    }
}
