//! Planning MySQL statements from Spanner transactions (DESIGN §6.1, §6.2, §6.6).
//!
//! Each record becomes one row change: inserts and updates an upsert of the full row
//! (`INSERT … ON DUPLICATE KEY UPDATE col = VALUES(col)`, which MySQL 5.7, 8.x and MariaDB all
//! accept; a table whose columns are all key columns gets `pk = pk`), deletes a delete by
//! primary key. Identifiers are quoted with backticks; values are always parameters.
//!
//! Order. Transactions keep their commit order. Inside one Spanner transaction the record
//! order is not necessarily the order the application wrote in, and InnoDB checks foreign keys
//! per statement, so a transaction's changes are put in an order the foreign keys accept:
//! upserts of a parent table before upserts of its child tables, and every change of a child
//! table before deletes of its parent tables (from the foreign-key graph of the target
//! schema). Changes of one key keep their order; otherwise the record order is kept as far as
//! these rules allow (a stable topological sort). Tables that reference each other (a cycle,
//! or a table referencing itself) keep their record order among themselves. If the rules
//! contradict the per-key order, the transaction keeps its record order.
//!
//! Merging. Consecutive changes of the same table, kind and column set become one multi-row
//! statement — MySQL applies its rows one after the other, so the outcome is that of the
//! separate statements. A key repeated in a run ends the run; deletes of a table that
//! references itself are never merged (a multi-row delete does not delete in the listed
//! order).
//!
//! Tables whose changes provably commute across keys — no foreign key in or out, no unique
//! index besides the primary key, no triggers, and a primary key MySQL compares exactly
//! (numbers, dates, binary strings, text with a binary collation; not `_ci` text, where
//! different strings can be one key) — are merged further within a batch: the final state
//! of such a table depends only on the order of the changes of each key, so the batch's
//! changes of the table are applied in rounds (the first change of every key, then the
//! second, ...), each round as one run per kind and column set, after the other tables'
//! statements. Interleaved upserts and deletes then cost a few large statements instead of
//! many small ones.
//!
//! Runs are cut into statements of power-of-two row counts up to a limit, so each table needs
//! only a handful of distinct statement texts, which are built once, cached here and prepared
//! once per connection (mysql_async's statement cache).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use mysql_async::Value;
use revrepl_record::{ChangeRecord, ModType, ShardId};
use serde_json::{Map, Value as Json};

use crate::batch::{CommitPosition, SpannerTransaction};
use crate::convert::{SourceTimeZone, convert};
use crate::error::{ConversionFailure, WriterError};
use crate::mapping::{ColumnTarget, SchemaMapping, SpannerType, TableTarget};
use crate::schema::{TargetSchema, TargetTable};

/// MySQL's limit on parameters in one prepared statement.
const MAX_PARAMETERS: usize = 65_535;

/// How large one statement may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Most rows per multi-row statement (rounded down to a power of two).
    pub max_rows: usize,
    /// Most bytes of parameter values per statement (a single larger row still goes alone).
    pub max_bytes: usize,
}

impl Default for StatementLimits {
    /// 256 rows or 4 MiB.
    fn default() -> Self {
        Self {
            max_rows: 256,
            max_bytes: 4 << 20,
        }
    }
}

/// Whether a statement writes rows or deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// `INSERT … ON DUPLICATE KEY UPDATE`.
    Upsert,
    /// `DELETE … WHERE <primary key>`.
    Delete,
}

/// One statement ready to execute.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStatement {
    /// The MySQL table.
    pub table: String,
    /// Upsert or delete.
    pub kind: StatementKind,
    /// The SQL text with `?` placeholders (shared by every statement of the same shape).
    pub sql: Arc<str>,
    /// The parameters, row after row.
    pub params: Vec<Value>,
    /// Per row, the record's keys as the record carries them (for error messages).
    pub keys: Vec<String>,
}

impl PlannedStatement {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.keys.len()
    }
}

/// Where a Spanner column's values go.
#[derive(Debug, Clone)]
enum Slot {
    Column {
        index: usize,
        spanner_type: Option<SpannerType>,
    },
    Ignored,
}

/// A Spanner table resolved against the target schema.
#[derive(Debug)]
struct TablePlan {
    spanner_name: String,
    target: Arc<TargetTable>,
    /// The node of the target table in the foreign-key graph.
    node: usize,
    slots: HashMap<String, Slot>,
    column_sets: HashMap<Vec<usize>, Arc<[usize]>>,
    primary_key: Arc<[usize]>,
    /// Whether changes of different keys commute (merged in rounds).
    commutes: bool,
}

/// One record as a row change.
#[derive(Debug)]
struct RowChange {
    plan: usize,
    node: usize,
    kind: StatementKind,
    /// Target column indexes of `values`: the columns written (upserts, ascending) or the
    /// primary key (deletes, in key order).
    columns: Arc<[usize]>,
    values: Vec<Value>,
    /// The key as MySQL would compare it (case and trailing spaces folded, conservatively).
    fingerprint: String,
    key_text: String,
    bytes: usize,
}

/// The foreign-key graph between target tables.
#[derive(Debug, Default)]
struct ForeignKeyGraph {
    nodes: HashMap<String, usize>,
    /// Per node, the tables it references (excluding tables of its own cycle).
    parents: Vec<Vec<usize>>,
    /// Per node, the tables referencing it (excluding tables of its own cycle).
    children: Vec<Vec<usize>>,
    /// Per node, whether it is part of a reference cycle (including referencing itself).
    cyclic: Vec<bool>,
}

impl ForeignKeyGraph {
    fn new(schema: &TargetSchema) -> Self {
        let nodes: HashMap<String, usize> = schema
            .tables()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let count = nodes.len();
        let mut references: Vec<HashSet<usize>> = vec![HashSet::new(); count];
        for fk in schema.foreign_keys() {
            if let (Some(&child), Some(&parent)) =
                (nodes.get(&fk.table), nodes.get(&fk.referenced_table))
            {
                references[child].insert(parent);
            }
        }
        // Reachability by breadth-first search from every node: schemas are small.
        let reach: Vec<HashSet<usize>> = (0..count)
            .map(|start| {
                let mut seen = HashSet::new();
                let mut queue: Vec<usize> = references[start].iter().copied().collect();
                while let Some(node) = queue.pop() {
                    if seen.insert(node) {
                        queue.extend(references[node].iter().copied());
                    }
                }
                seen
            })
            .collect();
        let same_cycle = |a: usize, b: usize| reach[a].contains(&b) && reach[b].contains(&a);
        let mut parents = vec![Vec::new(); count];
        let mut children = vec![Vec::new(); count];
        for (child, referenced) in references.iter().enumerate() {
            for &parent in referenced {
                if parent != child && !same_cycle(parent, child) {
                    parents[child].push(parent);
                    children[parent].push(child);
                }
            }
        }
        let cyclic = (0..count).map(|n| reach[n].contains(&n)).collect();
        Self {
            nodes,
            parents,
            children,
            cyclic,
        }
    }
}

/// Plans the statements of batches of Spanner transactions for one shard. Keeps resolved
/// tables and statement texts between batches.
#[derive(Debug)]
pub struct StatementPlanner {
    shard: ShardId,
    schema: Arc<TargetSchema>,
    mapping: Arc<SchemaMapping>,
    zone: SourceTimeZone,
    limits: StatementLimits,
    graph: ForeignKeyGraph,
    plans: Vec<TablePlan>,
    plan_by_spanner_name: HashMap<String, usize>,
    texts: HashMap<TextKey, Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TextKey {
    node: usize,
    kind: StatementKind,
    columns: Arc<[usize]>,
    rows: usize,
}

impl StatementPlanner {
    /// A planner for `shard` with its target schema, the Spanner → MySQL mapping, the source
    /// time zone and statement limits.
    pub fn new(
        shard: ShardId,
        schema: Arc<TargetSchema>,
        mapping: Arc<SchemaMapping>,
        zone: SourceTimeZone,
        limits: StatementLimits,
    ) -> Self {
        let graph = ForeignKeyGraph::new(&schema);
        Self {
            shard,
            schema,
            mapping,
            zone,
            limits,
            graph,
            plans: Vec::new(),
            plan_by_spanner_name: HashMap::new(),
            texts: HashMap::new(),
        }
    }

    /// The target schema the planner works with.
    pub fn schema(&self) -> &Arc<TargetSchema> {
        &self.schema
    }

    /// Plans the statements applying `transactions` (in commit order) in one MySQL
    /// transaction. Fails with a definite error on the first record that cannot be applied.
    pub fn plan(
        &mut self,
        transactions: &[SpannerTransaction],
    ) -> Result<Vec<PlannedStatement>, WriterError> {
        let mut changes = Vec::new();
        for transaction in transactions {
            let mut own = Vec::with_capacity(transaction.len());
            for record in transaction.records() {
                own.push(self.change(record)?);
            }
            changes.extend(self.foreign_key_order(own));
        }
        Ok(self.merge(changes))
    }

    fn plan_for(&mut self, spanner_table: &str) -> Result<usize, WriterError> {
        if let Some(&index) = self.plan_by_spanner_name.get(spanner_table) {
            return Ok(index);
        }
        let source = match self.mapping.table(spanner_table) {
            TableTarget::Source(name) => name.to_string(),
            TableTarget::SpannerOnly => {
                return Err(WriterError::SpannerOnlyTable {
                    shard: self.shard.clone(),
                    spanner_table: spanner_table.to_string(),
                });
            }
        };
        let target =
            self.schema
                .table(&source)
                .cloned()
                .ok_or_else(|| WriterError::MissingTable {
                    shard: self.shard.clone(),
                    spanner_table: spanner_table.to_string(),
                    source_table: source.clone(),
                    database: self.schema.database().to_string(),
                })?;
        if target.primary_key.is_empty() {
            return Err(WriterError::NoPrimaryKey {
                shard: self.shard.clone(),
                table: target.name.clone(),
            });
        }
        let node = self.graph.nodes.get(&target.name).copied().unwrap_or(0);
        let primary_key: Arc<[usize]> = target.primary_key.clone().into();
        let commutes = self.commutes(node, &target);
        self.plans.push(TablePlan {
            spanner_name: spanner_table.to_string(),
            target,
            node,
            slots: HashMap::new(),
            column_sets: HashMap::new(),
            primary_key,
            commutes,
        });
        let index = self.plans.len() - 1;
        self.plan_by_spanner_name
            .insert(spanner_table.to_string(), index);
        Ok(index)
    }

    fn slot(&mut self, plan: usize, column: &str) -> Result<Slot, WriterError> {
        let table = &mut self.plans[plan];
        if let Some(slot) = table.slots.get(column) {
            return Ok(slot.clone());
        }
        let slot = match self.mapping.column(&table.spanner_name, column) {
            ColumnTarget::SpannerOnly => Slot::Ignored,
            ColumnTarget::Source(name, spanner_type) => match table.target.column(name) {
                Some((_, target)) if target.generated => Slot::Ignored,
                Some((index, _)) => Slot::Column {
                    index,
                    spanner_type: spanner_type.cloned(),
                },
                None => {
                    return Err(WriterError::MissingColumn {
                        shard: self.shard.clone(),
                        table: table.target.name.clone(),
                        column: name.to_string(),
                    });
                }
            },
        };
        table.slots.insert(column.to_string(), slot.clone());
        Ok(slot)
    }

    fn malformed(&self, record: &ChangeRecord, reason: String) -> WriterError {
        WriterError::MalformedRecord {
            shard: self.shard.clone(),
            table: record.table_name.clone(),
            position: CommitPosition::of(record).to_string(),
            reason,
        }
    }

    fn object(
        &self,
        record: &ChangeRecord,
        what: &str,
        text: &str,
    ) -> Result<Map<String, Json>, WriterError> {
        serde_json::from_str(text)
            .map_err(|_| self.malformed(record, format!("{what} is not a JSON object")))
    }

    /// Converts `value` of Spanner column `column` into `into` (target index, value), unless
    /// the column is ignored or already set.
    fn put(
        &mut self,
        plan: usize,
        record: &ChangeRecord,
        column: &str,
        value: &Json,
        into: &mut Vec<(usize, Value)>,
        only: Option<&[usize]>,
    ) -> Result<(), WriterError> {
        let Slot::Column {
            index,
            spanner_type,
        } = self.slot(plan, column)?
        else {
            return Ok(());
        };
        if into.iter().any(|(i, _)| *i == index) || only.is_some_and(|keys| !keys.contains(&index))
        {
            return Ok(());
        }
        let table = &self.plans[plan].target;
        let target = &table.columns[index];
        let rules = self.mapping.rules();
        let converted =
            convert(value, target, spanner_type.as_ref(), &self.zone, rules).map_err(|error| {
                WriterError::Conversion(Box::new(ConversionFailure {
                    shard: self.shard.clone(),
                    table: table.name.clone(),
                    column: target.name.clone(),
                    column_type: target.column_type.clone(),
                    key: record.the_mod().keys_json.clone(),
                    error,
                }))
            })?;
        if converted.rounded {
            crate::telemetry::decimal_rounded(&self.shard, &table.name, &target.name);
        }
        into.push((index, converted.value));
        Ok(())
    }

    fn change(&mut self, record: &ChangeRecord) -> Result<RowChange, WriterError> {
        let plan = self.plan_for(&record.table_name)?;
        let the_mod = record.the_mod();
        let keys = self.object(record, "keysJson", &the_mod.keys_json)?;
        let kind = match record.mod_type {
            ModType::Insert | ModType::Update => StatementKind::Upsert,
            ModType::Delete => StatementKind::Delete,
        };
        let primary_key = Arc::clone(&self.plans[plan].primary_key);
        let mut values: Vec<(usize, Value)> = Vec::with_capacity(keys.len() + 8);
        for (column, value) in &keys {
            self.put(plan, record, column, value, &mut values, None)?;
        }
        if kind == StatementKind::Upsert {
            let new_values = self.object(record, "newValuesJson", &the_mod.new_values_json)?;
            for (column, value) in &new_values {
                self.put(plan, record, column, value, &mut values, None)?;
            }
        } else {
            // A delete needs only the key; drop other columns the keys may carry.
            values.retain(|(index, _)| primary_key.contains(index));
            if primary_key
                .iter()
                .any(|k| !values.iter().any(|(i, _)| i == k))
            {
                let new_values = self.object(record, "newValuesJson", &the_mod.new_values_json)?;
                for (column, value) in &new_values {
                    self.put(plan, record, column, value, &mut values, Some(&primary_key))?;
                }
            }
        }
        if primary_key
            .iter()
            .any(|k| !values.iter().any(|(i, _)| i == k))
        {
            // Old values hold the key columns that are not Spanner key columns, when the stream
            // captures them.
            let old_values = self.object(record, "oldValuesJson", &the_mod.old_values_json)?;
            for (column, value) in &old_values {
                self.put(plan, record, column, value, &mut values, Some(&primary_key))?;
            }
        }
        let table = &self.plans[plan];
        let mut key_values = Vec::with_capacity(primary_key.len());
        for &key_index in primary_key.iter() {
            match values.iter().find(|(i, _)| *i == key_index) {
                Some((_, value)) => key_values.push(value),
                None => {
                    return Err(WriterError::MissingKeyValue {
                        shard: self.shard.clone(),
                        table: table.target.name.clone(),
                        column: table.target.columns[key_index].name.clone(),
                        key: the_mod.keys_json.clone(),
                    });
                }
            }
        }
        let fingerprint = fingerprint(&key_values);
        let (columns, values) = match kind {
            StatementKind::Upsert => {
                values.sort_by_key(|(index, _)| *index);
                let indexes: Vec<usize> = values.iter().map(|(i, _)| *i).collect();
                let table = &mut self.plans[plan];
                let columns = match table.column_sets.entry(indexes) {
                    Entry::Occupied(set) => Arc::clone(set.get()),
                    Entry::Vacant(slot) => {
                        let set: Arc<[usize]> = slot.key().clone().into();
                        Arc::clone(slot.insert(set))
                    }
                };
                (columns, values.into_iter().map(|(_, v)| v).collect())
            }
            StatementKind::Delete => {
                let mut ordered = Vec::with_capacity(primary_key.len());
                for key_index in primary_key.iter() {
                    if let Some(position) = values.iter().position(|(i, _)| i == key_index) {
                        ordered.push(values.swap_remove(position).1);
                    }
                }
                (primary_key, ordered)
            }
        };
        let bytes = values.iter().map(value_bytes).sum();
        Ok(RowChange {
            plan,
            node: self.plans[plan].node,
            kind,
            columns,
            values,
            fingerprint,
            key_text: the_mod.keys_json.clone(),
            bytes,
        })
    }

    /// Orders one transaction's changes so that foreign keys accept them (see the module
    /// documentation).
    fn foreign_key_order(&self, changes: Vec<RowChange>) -> Vec<RowChange> {
        let present: HashSet<usize> = changes.iter().map(|c| c.node).collect();
        let related = present.iter().any(|&node| {
            self.graph
                .parents
                .get(node)
                .is_some_and(|parents| parents.iter().any(|p| present.contains(p)))
        });
        if !related {
            return changes;
        }
        let count = changes.len();
        // Nodes 0..count are changes; barriers follow: "all upserts of table t done" and
        // "every change of table t done".
        let mut upserts_done: HashMap<usize, usize> = HashMap::new();
        let mut all_done: HashMap<usize, usize> = HashMap::new();
        let mut next = count;
        for &table in &present {
            upserts_done.insert(table, next);
            all_done.insert(table, next + 1);
            next += 2;
        }
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); next];
        let mut last_of_key: HashMap<(usize, &str), usize> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            let table = change.node;
            if change.kind == StatementKind::Upsert {
                edges[i].push(upserts_done[&table]);
                for parent in &self.graph.parents[table] {
                    if let Some(&barrier) = upserts_done.get(parent) {
                        edges[barrier].push(i);
                    }
                }
            } else {
                for child in &self.graph.children[table] {
                    if let Some(&barrier) = all_done.get(child) {
                        edges[barrier].push(i);
                    }
                }
            }
            edges[i].push(all_done[&table]);
            if let Some(previous) = last_of_key.insert((table, change.fingerprint.as_str()), i) {
                edges[previous].push(i);
            }
        }
        let mut incoming = vec![0usize; next];
        for targets in &edges {
            for &target in targets {
                incoming[target] += 1;
            }
        }
        // Barriers go first when ready; changes by record order.
        let rank = |node: usize| if node >= count { (0, node) } else { (1, node) };
        let mut ready: BinaryHeap<Reverse<(u8, usize)>> = (0..next)
            .filter(|&n| incoming[n] == 0)
            .map(|n| Reverse(rank(n)))
            .collect();
        let mut order = Vec::with_capacity(count);
        while let Some(Reverse((_, node))) = ready.pop() {
            if node < count {
                order.push(node);
            }
            for &target in &edges[node] {
                incoming[target] -= 1;
                if incoming[target] == 0 {
                    ready.push(Reverse(rank(target)));
                }
            }
        }
        if order.len() < count {
            tracing::debug!(
                shard = %self.shard,
                "foreign-key order contradicts the per-key order; keeping the record order"
            );
            return changes;
        }
        let mut slots: Vec<Option<RowChange>> = changes.into_iter().map(Some).collect();
        order.into_iter().filter_map(|i| slots[i].take()).collect()
    }

    fn max_rows(&self, change: &RowChange) -> usize {
        let by_parameters = MAX_PARAMETERS / change.columns.len().max(1);
        let limit = self.limits.max_rows.min(by_parameters).max(1);
        1 << limit.ilog2()
    }

    /// Whether the changes of a table commute across keys (see the module documentation).
    fn commutes(&self, node: usize, target: &TargetTable) -> bool {
        self.graph.parents[node].is_empty()
            && self.graph.children[node].is_empty()
            && !self.graph.cyclic[node]
            && target.unique_indexes.is_empty()
            && !target.has_triggers
            && target
                .primary_key
                .iter()
                .all(|&k| target.columns[k].compares_exactly())
    }

    /// Merges changes into multi-row statements (see the module documentation).
    fn merge(&mut self, changes: Vec<RowChange>) -> Vec<PlannedStatement> {
        let mut statements = Vec::new();
        let mut in_order = Vec::with_capacity(changes.len());
        let mut commuting: Vec<(usize, Vec<RowChange>)> = Vec::new();
        for change in changes {
            if !self.plans[change.plan].commutes {
                in_order.push(change);
            } else if let Some((_, bucket)) = commuting.iter_mut().find(|(n, _)| *n == change.node)
            {
                bucket.push(change);
            } else {
                commuting.push((change.node, vec![change]));
            }
        }
        self.merge_consecutive(in_order, &mut statements);
        for (_, changes) in commuting {
            self.merge_in_rounds(changes, &mut statements);
        }
        statements
    }

    /// Runs of consecutive changes of the same table, kind and columns, ended by a repeated
    /// key; deletes of self-referencing tables stay alone.
    fn merge_consecutive(&mut self, changes: Vec<RowChange>, out: &mut Vec<PlannedStatement>) {
        let mut changes = changes.into_iter().peekable();
        while let Some(first) = changes.next() {
            let mergeable = first.kind == StatementKind::Upsert || !self.graph.cyclic[first.node];
            let mut keys: HashSet<String> = HashSet::from([first.fingerprint.clone()]);
            let mut run = vec![first];
            while let Some(candidate) = changes.peek() {
                if !mergeable
                    || !same_shape(&run[0], candidate)
                    || keys.contains(&candidate.fingerprint)
                {
                    break;
                }
                keys.insert(candidate.fingerprint.clone());
                if let Some(next) = changes.next() {
                    run.push(next);
                }
            }
            self.push_run(run, out);
        }
    }

    /// Changes of a table whose changes commute across keys, in rounds: the first change of
    /// every key, then the second, ...; inside a round, one run per kind and column set.
    fn merge_in_rounds(&mut self, changes: Vec<RowChange>, out: &mut Vec<PlannedStatement>) {
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(changes.len());
        let mut rounds: Vec<Vec<RowChange>> = Vec::new();
        for change in changes {
            let count = seen.entry(change.fingerprint.clone()).or_insert(0);
            let round = *count;
            *count += 1;
            if rounds.len() <= round {
                rounds.resize_with(round + 1, Vec::new);
            }
            rounds[round].push(change);
        }
        for round in rounds {
            let mut runs: Vec<Vec<RowChange>> = Vec::new();
            for change in round {
                match runs.iter_mut().find(|run| same_shape(&run[0], &change)) {
                    Some(run) => run.push(change),
                    None => runs.push(vec![change]),
                }
            }
            for run in runs {
                self.push_run(run, out);
            }
        }
    }

    /// Cuts a run of rows with distinct keys into statements within the limits, each of a
    /// power-of-two row count, largest first.
    fn push_run(&mut self, run: Vec<RowChange>, out: &mut Vec<PlannedStatement>) {
        let Some(first) = run.first() else {
            return;
        };
        let max_rows = self.max_rows(first);
        let mut rows = run.into_iter().peekable();
        while rows.peek().is_some() {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while let Some(row) = rows.peek() {
                if chunk.len() == max_rows
                    || (!chunk.is_empty() && bytes + row.bytes > self.limits.max_bytes)
                {
                    break;
                }
                bytes += row.bytes;
                if let Some(row) = rows.next() {
                    chunk.push(row);
                }
            }
            let mut rest = chunk.into_iter();
            let mut remaining = rest.len();
            while remaining > 0 {
                let size = 1 << remaining.ilog2();
                let piece: Vec<RowChange> = rest.by_ref().take(size).collect();
                remaining -= size;
                out.push(self.statement(piece));
            }
        }
    }

    fn statement(&mut self, rows: Vec<RowChange>) -> PlannedStatement {
        let (plan, kind, columns) = match rows.first() {
            Some(first) => (first.plan, first.kind, Arc::clone(&first.columns)),
            None => (0, StatementKind::Upsert, Arc::from(Vec::new())),
        };
        let table = Arc::clone(&self.plans[plan].target);
        let key = TextKey {
            node: self.plans[plan].node,
            kind,
            columns: Arc::clone(&columns),
            rows: rows.len(),
        };
        let sql = match self.texts.get(&key) {
            Some(sql) => Arc::clone(sql),
            None => {
                let sql: Arc<str> = statement_text(&table, kind, &columns, rows.len()).into();
                self.texts.insert(key, Arc::clone(&sql));
                sql
            }
        };
        let mut params = Vec::with_capacity(rows.len() * columns.len());
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            params.extend(row.values);
            keys.push(row.key_text);
        }
        PlannedStatement {
            table: table.name.clone(),
            kind,
            sql,
            params,
            keys,
        }
    }
}

/// Whether two changes can share a statement: same table, kind and columns.
fn same_shape(a: &RowChange, b: &RowChange) -> bool {
    a.node == b.node
        && a.kind == b.kind
        && (Arc::ptr_eq(&a.columns, &b.columns) || a.columns == b.columns)
}

/// Quotes an identifier with backticks, doubling backticks inside.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The SQL of a statement of `rows` rows over `columns` (indexes into `table.columns`).
fn statement_text(
    table: &TargetTable,
    kind: StatementKind,
    columns: &[usize],
    rows: usize,
) -> String {
    let name = |index: &usize| quote_identifier(&table.columns[*index].name);
    let table_name = quote_identifier(&table.name);
    match kind {
        StatementKind::Upsert => {
            let names: Vec<String> = columns.iter().map(name).collect();
            let placeholders = format!("({})", vec!["?"; columns.len()].join(","));
            let mut updates: Vec<String> = columns
                .iter()
                .filter(|index| !table.primary_key.contains(index))
                .map(|index| {
                    let column = name(index);
                    format!("{column}=VALUES({column})")
                })
                .collect();
            if updates.is_empty() {
                // Only key columns: an existing row stays as it is.
                let column = table.primary_key.first().map(name).unwrap_or_default();
                updates.push(format!("{column}={column}"));
            }
            format!(
                "INSERT INTO {table_name} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
                names.join(","),
                vec![placeholders; rows].join(","),
                updates.join(",")
            )
        }
        StatementKind::Delete => {
            let condition = if columns.len() == 1 {
                let column = columns.first().map(name).unwrap_or_default();
                if rows == 1 {
                    format!("{column}=?")
                } else {
                    format!("{column} IN ({})", vec!["?"; rows].join(","))
                }
            } else {
                let one: Vec<String> = columns.iter().map(|i| format!("{}=?", name(i))).collect();
                let one = one.join(" AND ");
                if rows == 1 {
                    one
                } else {
                    vec![format!("({one})"); rows].join(" OR ")
                }
            };
            format!("DELETE FROM {table_name} WHERE {condition}")
        }
    }
}

/// A key's identity as MySQL may see it: case-insensitive collations and PAD SPACE make `'a'`,
/// `'A'` and `'a '` the same key, so they are folded (conservatively: binary keys too).
fn fingerprint(values: &[&Value]) -> String {
    let mut out = String::new();
    for value in values {
        let text = match value {
            Value::Bytes(bytes) => String::from_utf8_lossy(bytes)
                .trim_end_matches(' ')
                .to_lowercase(),
            other => other.as_sql(true),
        };
        out.push_str(&text.len().to_string());
        out.push(':');
        out.push_str(&text);
    }
    out
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Bytes(bytes) => bytes.len() + 4,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ForeignKey, TargetColumn};
    use revrepl_record::{Mod, Timestamp};

    fn record(table: &str, kind: ModType, keys: &str, values: &str, seq: u32) -> ChangeRecord {
        ChangeRecord {
            commit_timestamp: Timestamp::new(100, 0).expect("valid"),
            server_transaction_id: "tx".into(),
            record_sequence: format!("{seq:08}"),
            table_name: table.into(),
            mods: [Mod {
                keys_json: keys.into(),
                old_values_json: "{}".into(),
                new_values_json: values.into(),
            }],
            mod_type: kind,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: "s1".into(),
        }
    }

    fn fk(child: &str, column: &str, parent: &str) -> ForeignKey {
        ForeignKey {
            name: format!("fk_{child}"),
            table: child.into(),
            columns: vec![column.into()],
            referenced_table: parent.into(),
            referenced_columns: vec!["id".into()],
            delete_rule: "RESTRICT".into(),
        }
    }

    fn planner(limits: StatementLimits) -> StatementPlanner {
        let tables = vec![
            TargetTable::new(
                "parent",
                vec![
                    TargetColumn::new("id", "int").not_null(),
                    TargetColumn::new("name", "varchar(10)"),
                ],
                &["id"],
            ),
            TargetTable::new(
                "child",
                vec![
                    TargetColumn::new("id", "int").not_null(),
                    TargetColumn::new("parent_id", "int"),
                ],
                &["id"],
            ),
            TargetTable::new(
                "order",
                vec![
                    TargetColumn::new("a", "int").not_null(),
                    TargetColumn::new("key`", "varchar(10)").not_null(),
                ],
                &["a", "key`"],
            ),
            TargetTable::new(
                "event",
                vec![
                    TargetColumn::new("id", "int").not_null(),
                    TargetColumn::new("v", "varchar(10)"),
                ],
                &["id"],
            ),
            TargetTable::new(
                "node",
                vec![
                    TargetColumn::new("id", "int").not_null(),
                    TargetColumn::new("up", "int"),
                ],
                &["id"],
            ),
        ];
        let schema = TargetSchema::new(
            "db",
            tables,
            vec![fk("child", "parent_id", "parent"), fk("node", "up", "node")],
        );
        StatementPlanner::new(
            ShardId::new("s1").expect("valid shard"),
            Arc::new(schema),
            Arc::new(SchemaMapping::identity()),
            SourceTimeZone::default(),
            limits,
        )
    }

    fn plan(planner: &mut StatementPlanner, records: Vec<ChangeRecord>) -> Vec<PlannedStatement> {
        let transactions = SpannerTransaction::group(records);
        planner.plan(&transactions).expect("plannable")
    }

    fn shape(statements: &[PlannedStatement]) -> Vec<String> {
        statements
            .iter()
            .map(|s| format!("{}:{:?}:{}", s.table, s.kind, s.rows()))
            .collect()
    }

    #[test]
    fn builds_upserts_and_deletes_with_quoted_identifiers() {
        let mut p = planner(StatementLimits::default());
        let statements = plan(
            &mut p,
            vec![
                record("order", ModType::Insert, r#"{"a":"1","key`":"x"}"#, "{}", 0),
                record("order", ModType::Delete, r#"{"a":"2","key`":"y"}"#, "{}", 1),
                record(
                    "parent",
                    ModType::Update,
                    r#"{"id":"3"}"#,
                    r#"{"name":"n"}"#,
                    2,
                ),
            ],
        );
        let sql: Vec<&str> = statements.iter().map(|s| &*s.sql).collect();
        assert_eq!(
            sql,
            vec![
                "INSERT INTO `order` (`a`,`key```) VALUES (?,?) ON DUPLICATE KEY UPDATE `a`=`a`",
                "DELETE FROM `order` WHERE `a`=? AND `key```=?",
                "INSERT INTO `parent` (`id`,`name`) VALUES (?,?) ON DUPLICATE KEY UPDATE `name`=VALUES(`name`)",
            ]
        );
        assert_eq!(
            statements[2].params,
            vec![Value::Int(3), Value::Bytes(b"n".to_vec())]
        );
    }

    #[test]
    fn merges_runs_until_a_key_repeats() {
        let mut p = planner(StatementLimits::default());
        let statements = plan(
            &mut p,
            vec![
                record(
                    "parent",
                    ModType::Insert,
                    r#"{"id":"1"}"#,
                    r#"{"name":"a"}"#,
                    0,
                ),
                record(
                    "parent",
                    ModType::Insert,
                    r#"{"id":"2"}"#,
                    r#"{"name":"b"}"#,
                    1,
                ),
                record(
                    "parent",
                    ModType::Update,
                    r#"{"id":"1"}"#,
                    r#"{"name":"c"}"#,
                    2,
                ),
                record("parent", ModType::Delete, r#"{"id":"3"}"#, "{}", 3),
                record("parent", ModType::Delete, r#"{"id":"4"}"#, "{}", 4),
            ],
        );
        assert_eq!(
            shape(&statements),
            vec!["parent:Upsert:2", "parent:Upsert:1", "parent:Delete:2"]
        );
        assert_eq!(
            &*statements[2].sql,
            "DELETE FROM `parent` WHERE `id` IN (?,?)"
        );
    }

    #[test]
    fn commuting_tables_merge_in_rounds_per_key() {
        let mut p = planner(StatementLimits::default());
        let up = |id: u32, v: &str, seq| {
            record(
                "event",
                ModType::Update,
                &format!(r#"{{"id":"{id}"}}"#),
                &format!(r#"{{"v":"{v}"}}"#),
                seq,
            )
        };
        let del = |id: u32, seq| {
            record(
                "event",
                ModType::Delete,
                &format!(r#"{{"id":"{id}"}}"#),
                "{}",
                seq,
            )
        };
        let statements = plan(
            &mut p,
            vec![
                up(1, "a", 0),
                del(2, 1),
                up(3, "b", 2),
                up(1, "c", 3),
                del(4, 4),
                up(5, "d", 5),
                del(1, 6),
                record("parent", ModType::Insert, r#"{"id":"9"}"#, "{}", 7),
            ],
        );
        assert_eq!(
            shape(&statements),
            vec![
                "parent:Upsert:1",
                "event:Upsert:2",
                "event:Upsert:1",
                "event:Delete:2",
                "event:Upsert:1",
                "event:Delete:1"
            ]
        );
        assert_eq!(
            statements[4].params,
            vec![Value::Int(1), Value::Bytes(b"c".to_vec())]
        );
        // A table with a unique index besides the key keeps the record order.
        let schema = TargetSchema::new(
            "db",
            vec![
                TargetTable::new(
                    "event",
                    vec![
                        TargetColumn::new("id", "int").not_null(),
                        TargetColumn::new("v", "varchar(10)"),
                    ],
                    &["id"],
                )
                .with_unique_index("uv"),
            ],
            Vec::new(),
        );
        let mut p = StatementPlanner::new(
            ShardId::new("s1").expect("valid shard"),
            Arc::new(schema),
            Arc::new(SchemaMapping::identity()),
            SourceTimeZone::default(),
            StatementLimits::default(),
        );
        let statements = plan(&mut p, vec![up(1, "a", 0), del(2, 1), up(3, "b", 2)]);
        assert_eq!(
            shape(&statements),
            vec!["event:Upsert:1", "event:Delete:1", "event:Upsert:1"]
        );
    }

    #[test]
    fn cuts_runs_into_power_of_two_statements() {
        let mut p = planner(StatementLimits {
            max_rows: 6,
            max_bytes: usize::MAX,
        });
        let records = (0..11)
            .map(|i| {
                record(
                    "parent",
                    ModType::Insert,
                    &format!(r#"{{"id":"{i}"}}"#),
                    r#"{"name":"x"}"#,
                    i,
                )
            })
            .collect();
        let statements = plan(&mut p, records);
        let rows: Vec<usize> = statements.iter().map(PlannedStatement::rows).collect();
        assert_eq!(rows, vec![4, 4, 2, 1]);
        // The same shape reuses the same text.
        assert!(Arc::ptr_eq(&statements[0].sql, &statements[1].sql));
    }

    #[test]
    fn orders_parents_and_children_within_a_transaction() {
        let mut p = planner(StatementLimits::default());
        // Child-first record order: insert child, then its parent; delete parent, then child.
        let statements = plan(
            &mut p,
            vec![
                record(
                    "child",
                    ModType::Insert,
                    r#"{"id":"10"}"#,
                    r#"{"parent_id":"1"}"#,
                    0,
                ),
                record(
                    "parent",
                    ModType::Insert,
                    r#"{"id":"1"}"#,
                    r#"{"name":"p"}"#,
                    1,
                ),
                record("parent", ModType::Delete, r#"{"id":"2"}"#, "{}", 2),
                record("child", ModType::Delete, r#"{"id":"20"}"#, "{}", 3),
            ],
        );
        assert_eq!(
            shape(&statements),
            vec![
                "parent:Upsert:1",
                "child:Upsert:1",
                "child:Delete:1",
                "parent:Delete:1"
            ]
        );
    }

    #[test]
    fn keeps_per_key_order_and_self_references() {
        let mut p = planner(StatementLimits::default());
        let statements = plan(
            &mut p,
            vec![
                record(
                    "parent",
                    ModType::Insert,
                    r#"{"id":"1"}"#,
                    r#"{"name":"a"}"#,
                    0,
                ),
                record(
                    "parent",
                    ModType::Update,
                    r#"{"id":"1"}"#,
                    r#"{"name":"b"}"#,
                    1,
                ),
                record("parent", ModType::Delete, r#"{"id":"1"}"#, "{}", 2),
                record(
                    "parent",
                    ModType::Insert,
                    r#"{"id":"1"}"#,
                    r#"{"name":"c"}"#,
                    3,
                ),
                record("node", ModType::Delete, r#"{"id":"1"}"#, "{}", 4),
                record("node", ModType::Delete, r#"{"id":"2"}"#, "{}", 5),
            ],
        );
        assert_eq!(
            shape(&statements),
            vec![
                "parent:Upsert:1",
                "parent:Upsert:1",
                "parent:Delete:1",
                "parent:Upsert:1",
                "node:Delete:1",
                "node:Delete:1"
            ]
        );
        assert_eq!(
            statements[3].params,
            vec![Value::Int(1), Value::Bytes(b"c".to_vec())]
        );
    }

    #[test]
    fn reports_missing_tables_columns_and_bad_values() {
        let mut p = planner(StatementLimits::default());
        let fail = |p: &mut StatementPlanner, r: ChangeRecord| {
            p.plan(&SpannerTransaction::group(vec![r]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let missing_table = fail(
            &mut p,
            record("Nope", ModType::Insert, r#"{"id":"1"}"#, "{}", 0),
        );
        assert!(missing_table.contains("\"Nope\""), "{missing_table}");
        let missing_column = fail(
            &mut p,
            record(
                "parent",
                ModType::Insert,
                r#"{"id":"1"}"#,
                r#"{"nick":"x"}"#,
                0,
            ),
        );
        assert!(
            missing_column.contains("shard s1, table parent")
                && missing_column.contains("\"nick\""),
            "{missing_column}"
        );
        let too_long = fail(
            &mut p,
            record(
                "parent",
                ModType::Insert,
                r#"{"id":"7"}"#,
                r#"{"name":"secret-value-too-long"}"#,
                0,
            ),
        );
        assert!(
            too_long.contains("column name (varchar(10)), key {\"id\":\"7\"}")
                && too_long.contains("JSON string")
                && !too_long.contains("secret"),
            "{too_long}"
        );
        let no_key = fail(&mut p, record("parent", ModType::Delete, "{}", "{}", 0));
        assert!(no_key.contains("primary-key column \"id\""), "{no_key}");
    }
}
