//! Planning MySQL statements from Spanner transactions (DESIGN §6.1, §6.2, §6.6).
//!
//! Net effect. Inside one Spanner transaction, the records of one row (one Spanner key) are
//! combined first, in record order, into the row's state at commit: present with its final
//! values, or absent. A delete followed by an insert of the same row is therefore an update of
//! the row in place — never a delete and re-insert, which would fire `ON DELETE CASCADE` on its
//! children in MySQL although Spanner still has them.
//!
//! Each row then becomes one row change: present rows an upsert of the row
//! (`INSERT … ON DUPLICATE KEY UPDATE col = VALUES(col)`, which MySQL 5.7, 8.x and MariaDB all
//! accept; a table whose columns are all key columns gets `pk = pk`), absent rows a delete by
//! primary key. On a table with a unique index besides the primary key, the upsert is guarded:
//! its first assignment sets the key to `NULL` — an error in strict mode — unless the
//! duplicate it met is the row of its own key, so it can never update another row whose unique
//! value it collided with. Identifiers are quoted with backticks; values are always parameters.
//!
//! Keys Spanner does not key on. When the MySQL primary key has columns that are not Spanner
//! key columns, an update can change them: with old values (`NEW_ROW_AND_OLD_VALUES`) the row
//! under the old key is deleted first when the key changed; without them, every row of the
//! Spanner key except the one under the new key is deleted first ([`StatementKind::DeleteStale`]).
//! A delete without old values deletes the rows of its Spanner key
//! ([`StatementKind::DeleteBySpannerKey`]). Either way one Spanner row is one MySQL row.
//!
//! Order. Transactions keep their commit order. Inside one Spanner transaction the record
//! order is not the order the application wrote in, and InnoDB checks unique indexes and
//! foreign keys per row, so a transaction's row changes are put in an order that makes
//! conflicts unlikely: upserts of a parent table before upserts of its child tables, every
//! change of a child table before deletes of its parent tables (from the foreign-key graph of
//! the target schema); within tables that reference each other (a cycle, or a table
//! referencing itself) all upserts before any delete, and a new parent row before the rows
//! that reference it; otherwise deletes first (they free unique values), then updates of rows
//! that existed (they may give up unique values), then inserts, each in record order. If these
//! rules contradict each other, the transaction keeps its record order. Orders that still meet
//! a unique or foreign-key conflict (a swap of unique values, a delete order only old values
//! would show) fail with a constraint error, never with a wrong row, and the applier then
//! resolves the transaction row by row (`crate::careful`).
//!
//! Merging. Consecutive changes of the same table, kind and column set become one multi-row
//! statement — MySQL applies its rows one after the other, so the outcome is that of the
//! separate statements. A key repeated in a run ends the run; deletes of a table that
//! references itself are never merged (a multi-row delete does not delete in the listed
//! order).
//!
//! Tables whose changes provably commute across keys — no foreign key in or out, no unique
//! index besides the primary key, no triggers, a primary key MySQL compares exactly (numbers,
//! dates, binary strings, text with a binary collation; not `_ci` text, where different strings
//! can be one key) and made of Spanner key columns — are merged further within a batch: the
//! final state of such a table depends only on the order of the changes of each key, so the
//! batch's changes of the table are applied in rounds (the first change of every key, then the
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
use crate::error::{ConversionFailure, TransformationFailure, WriterError};
use crate::mapping::{ColumnTarget, SchemaMapping, SpannerType, TableTarget};
use crate::schema::{TargetSchema, TargetTable};
use crate::transformation::{
    Operation, RecordTransformer, SourceRow, TransformCounts, TransformationProblem, Transformed,
};

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
    /// `INSERT … ON DUPLICATE KEY UPDATE` (guarded on tables with unique secondary indexes).
    Upsert,
    /// `DELETE … WHERE <primary key>`.
    Delete,
    /// `DELETE … WHERE <Spanner key columns>`: a delete without the values of the MySQL
    /// primary-key columns Spanner does not key on.
    DeleteBySpannerKey,
    /// `DELETE … WHERE <Spanner key columns> AND NOT <primary key>`: before an update that
    /// may have changed a MySQL primary-key column Spanner does not key on (no old values),
    /// the row under the old key.
    DeleteStale,
}

impl StatementKind {
    /// Whether the statement deletes rows.
    pub fn deletes(self) -> bool {
        self != Self::Upsert
    }
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

/// One row change of a Spanner transaction, after its records are combined per row and put in
/// order: what `crate::careful` applies row by row.
#[derive(Debug, Clone)]
pub(crate) struct RowOp {
    /// The MySQL table.
    pub table: Arc<TargetTable>,
    /// What to do.
    pub kind: StatementKind,
    /// Target column indexes of `values`, as in [`statement_text`].
    pub columns: Arc<[usize]>,
    /// The values.
    pub values: Vec<Value>,
    /// The record's keys as the record carries them (for error messages).
    pub key_text: String,
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
    /// Whether changes of different keys commute (merged in rounds), as far as the schema
    /// tells.
    commutes: bool,
    /// Whether a record was met whose keys lack a MySQL primary-key column.
    keys_incomplete: bool,
    /// Foreign keys of the table to itself: (referencing columns, referenced columns).
    self_references: Vec<(Vec<usize>, Vec<usize>)>,
}

/// One record (or a row's combined records) as a row change.
#[derive(Debug)]
struct RowChange {
    plan: usize,
    node: usize,
    kind: StatementKind,
    /// Target column indexes of `values`: the columns written (upserts, ascending), the
    /// primary key (deletes, in key order), the Spanner key columns (deletes by Spanner key,
    /// ascending), or those followed by the primary key (stale-row deletes).
    columns: Arc<[usize]>,
    values: Vec<Value>,
    /// The MySQL key as MySQL would compare it (case and trailing spaces folded,
    /// conservatively); the Spanner key for deletes by Spanner key.
    fingerprint: String,
    /// The row: its Spanner key values, when they are not exactly its MySQL key (`None`: the
    /// MySQL key identifies the row).
    identity: Option<Vec<Value>>,
    /// The row's place among the rows of its transaction (set when they are combined).
    row: usize,
    /// Upserts: whether the row existed before the transaction (its first record in the
    /// transaction is not an insert).
    existed: bool,
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
    /// Per node, its strongly connected component (the smallest node of it).
    component: Vec<usize>,
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
        let component = (0..count)
            .map(|n| (0..n).find(|&m| same_cycle(m, n)).unwrap_or(n))
            .collect();
        Self {
            nodes,
            parents,
            children,
            cyclic,
            component,
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
    /// Plans of source tables written by the transformation plugin.
    plan_by_source_name: HashMap<String, usize>,
    texts: HashMap<TextKey, Arc<str>>,
    /// The transformation plugin, if one is configured.
    transformer: Option<Arc<dyn RecordTransformer>>,
    /// What the plugin did with the records planned since the last
    /// [`StatementPlanner::take_transform_counts`].
    transform_counts: TransformCounts,
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
            plan_by_source_name: HashMap::new(),
            texts: HashMap::new(),
            transformer: None,
            transform_counts: TransformCounts::default(),
        }
    }

    /// Asks `transformer` (if any) what to apply for each record (see
    /// [`crate::transformation`]): the record as it is, nothing, or source row changes, which
    /// are planned like the records' own (combined per row, ordered, merged).
    pub fn with_transformer(mut self, transformer: Option<Arc<dyn RecordTransformer>>) -> Self {
        self.transformer = transformer;
        self
    }

    /// What the transformation plugin did with the records of the plans made since the last
    /// call (each [`StatementPlanner::plan`] starts counting afresh).
    pub fn take_transform_counts(&mut self) -> TransformCounts {
        std::mem::take(&mut self.transform_counts)
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
        self.transform_counts = TransformCounts::default();
        let mut changes = Vec::new();
        for transaction in transactions {
            let own = self.transaction_changes(transaction)?;
            changes.extend(own);
        }
        Ok(self.merge(changes))
    }

    /// The row changes of one transaction, combined per row and in order, one by one.
    pub(crate) fn plan_ops(
        &mut self,
        transaction: &SpannerTransaction,
    ) -> Result<Vec<RowOp>, WriterError> {
        self.transform_counts = TransformCounts::default();
        let changes = self.transaction_changes(transaction)?;
        Ok(changes
            .into_iter()
            .map(|change| RowOp {
                table: Arc::clone(&self.plans[change.plan].target),
                kind: change.kind,
                columns: change.columns,
                values: change.values,
                key_text: change.key_text,
            })
            .collect())
    }

    /// One transaction's row changes: records converted, combined per row, ordered.
    fn transaction_changes(
        &mut self,
        transaction: &SpannerTransaction,
    ) -> Result<Vec<RowChange>, WriterError> {
        let mut own = Vec::with_capacity(transaction.len());
        match self.transformer.clone() {
            None => {
                for record in transaction.records() {
                    self.change(record, &mut own)?;
                }
            }
            Some(transformer) => {
                for record in transaction.records() {
                    self.transformed_change(&*transformer, record, &mut own)?;
                }
            }
        }
        let combined = self.combine(own);
        Ok(self.order(combined))
    }

    /// Asks the plugin about `record` and adds what it answers to `out`.
    fn transformed_change(
        &mut self,
        transformer: &dyn RecordTransformer,
        record: &ChangeRecord,
        out: &mut Vec<RowChange>,
    ) -> Result<(), WriterError> {
        let answer = transformer
            .transform(&self.shard, record)
            .map_err(|problem| self.transformation_failure(transformer, record, problem))?;
        match answer {
            Transformed::Keep => {
                self.transform_counts.kept(&record.table_name);
                self.change(record, out)
            }
            Transformed::Drop => {
                self.transform_counts.dropped(&record.table_name);
                Ok(())
            }
            Transformed::Write { rows } => {
                for row in rows {
                    self.source_change(record, row, out).map_err(|problem| {
                        self.transformation_failure(transformer, record, problem)
                    })?;
                }
                self.transform_counts.transformed(&record.table_name);
                Ok(())
            }
        }
    }

    fn transformation_failure(
        &self,
        transformer: &dyn RecordTransformer,
        record: &ChangeRecord,
        problem: TransformationProblem,
    ) -> WriterError {
        WriterError::Transformation(Box::new(TransformationFailure {
            shard: self.shard.clone(),
            plugin: transformer.name().to_string(),
            table: record.table_name.clone(),
            key: record.the_mod().keys_json.clone(),
            position: CommitPosition::of(record).to_string(),
            problem,
        }))
    }

    /// The plan of source table `table`, written by the transformation plugin.
    fn source_plan_for(&mut self, table: &str) -> Result<usize, TransformationProblem> {
        if let Some(&index) = self.plan_by_source_name.get(table) {
            return Ok(index);
        }
        let target = self.schema.table(table).cloned().ok_or_else(|| {
            TransformationProblem::UnknownTable {
                table: table.to_string(),
                database: self.schema.database().to_string(),
            }
        })?;
        if target.primary_key.is_empty() {
            return Err(TransformationProblem::NoPrimaryKey {
                table: target.name.clone(),
            });
        }
        let index = self.add_plan(table.to_string(), target);
        self.plan_by_source_name.insert(table.to_string(), index);
        Ok(index)
    }

    /// A row change of the plugin as a row change into `out`: its values converted by the
    /// writer's type rules, by the source column's type.
    fn source_change(
        &mut self,
        record: &ChangeRecord,
        row: SourceRow,
        out: &mut Vec<RowChange>,
    ) -> Result<(), TransformationProblem> {
        let plan = self.source_plan_for(&row.table)?;
        let upsert = row.operation == Operation::Upsert;
        let primary_key = Arc::clone(&self.plans[plan].primary_key);
        let table = Arc::clone(&self.plans[plan].target);
        let rules = *self.mapping.rules();
        let mut values: Vec<(usize, Value)> = Vec::with_capacity(row.values.len());
        for (column, value) in &row.values {
            let Some((index, target)) = table.column(column) else {
                return Err(TransformationProblem::UnknownColumn {
                    table: table.name.clone(),
                    column: column.clone(),
                });
            };
            if values.iter().any(|(i, _)| *i == index) {
                return Err(TransformationProblem::DuplicateColumn {
                    table: table.name.clone(),
                    column: target.name.clone(),
                });
            }
            if !upsert && !primary_key.contains(&index) {
                continue;
            }
            if target.generated {
                return Err(TransformationProblem::GeneratedColumn {
                    table: table.name.clone(),
                    column: target.name.clone(),
                });
            }
            let converted = convert(value, target, None, &self.zone, &rules).map_err(|error| {
                TransformationProblem::Conversion {
                    table: table.name.clone(),
                    column: target.name.clone(),
                    column_type: target.column_type.clone(),
                    error,
                }
            })?;
            if converted.rounded {
                crate::telemetry::decimal_rounded(&self.shard, &table.name, &target.name);
            }
            values.push((index, converted.value));
        }
        let mut key_of_row = Vec::with_capacity(primary_key.len());
        for &key_index in primary_key.iter() {
            match values.iter().find(|(i, _)| *i == key_index) {
                Some((_, value)) => key_of_row.push(value.clone()),
                None => {
                    return Err(TransformationProblem::MissingKey {
                        table: table.name.clone(),
                        column: table.columns[key_index].name.clone(),
                    });
                }
            }
        }
        let fingerprint = fingerprint(&key_of_row.iter().collect::<Vec<_>>());
        let (kind, columns, values) = if upsert {
            values.sort_by_key(|(index, _)| *index);
            let columns = self.column_set(plan, values.iter().map(|(i, _)| *i).collect());
            let values: Vec<Value> = values.into_iter().map(|(_, v)| v).collect();
            (StatementKind::Upsert, columns, values)
        } else {
            (StatementKind::Delete, primary_key, key_of_row)
        };
        out.push(RowChange {
            plan,
            node: self.plans[plan].node,
            kind,
            bytes: values.iter().map(value_bytes).sum(),
            columns,
            values,
            fingerprint,
            identity: None,
            row: 0,
            existed: record.mod_type != ModType::Insert,
            key_text: record.the_mod().keys_json.clone(),
        });
        Ok(())
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
        let index = self.add_plan(spanner_table.to_string(), target);
        self.plan_by_spanner_name
            .insert(spanner_table.to_string(), index);
        Ok(index)
    }

    /// Adds the plan of `target` for the records of Spanner table `spanner_name` (or, for the
    /// plugin's row changes, named after the source table) and returns its index.
    fn add_plan(&mut self, spanner_name: String, target: Arc<TargetTable>) -> usize {
        let node = self.graph.nodes.get(&target.name).copied().unwrap_or(0);
        let primary_key: Arc<[usize]> = target.primary_key.clone().into();
        let commutes = self.commutes(node, &target);
        let indexes = |names: &[String]| -> Option<Vec<usize>> {
            names
                .iter()
                .map(|name| target.column(name).map(|(i, _)| i))
                .collect()
        };
        let self_references = self
            .schema
            .foreign_keys()
            .iter()
            .filter(|fk| fk.table == target.name && fk.referenced_table == target.name)
            .filter_map(|fk| Some((indexes(&fk.columns)?, indexes(&fk.referenced_columns)?)))
            .collect();
        self.plans.push(TablePlan {
            spanner_name,
            target,
            node,
            slots: HashMap::new(),
            column_sets: HashMap::new(),
            primary_key,
            commutes,
            keys_incomplete: false,
            self_references,
        });
        self.plans.len() - 1
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

    /// The shared column set `indexes` (ascending) of `plan`.
    fn column_set(&mut self, plan: usize, indexes: Vec<usize>) -> Arc<[usize]> {
        match self.plans[plan].column_sets.entry(indexes) {
            Entry::Occupied(set) => Arc::clone(set.get()),
            Entry::Vacant(slot) => {
                let set: Arc<[usize]> = slot.key().clone().into();
                Arc::clone(slot.insert(set))
            }
        }
    }

    /// The record as a row change into `out`, preceded by the delete of the row under its old
    /// MySQL key when an update may have moved it (see the module documentation).
    fn change(
        &mut self,
        record: &ChangeRecord,
        out: &mut Vec<RowChange>,
    ) -> Result<(), WriterError> {
        let plan = self.plan_for(&record.table_name)?;
        let the_mod = record.the_mod();
        let keys = self.object(record, "keysJson", &the_mod.keys_json)?;
        let upsert = matches!(record.mod_type, ModType::Insert | ModType::Update);
        let primary_key = Arc::clone(&self.plans[plan].primary_key);
        let mut key_values: Vec<(usize, Value)> = Vec::with_capacity(keys.len() + 8);
        for (column, value) in &keys {
            self.put(plan, record, column, value, &mut key_values, None)?;
        }
        key_values.sort_by_key(|(index, _)| *index);
        let keyed = primary_key
            .iter()
            .all(|k| key_values.iter().any(|(i, _)| i == k));
        if !keyed {
            self.plans[plan].keys_incomplete = true;
        }
        // The row's identity: its Spanner key, unless that is exactly its MySQL key.
        let identity: Option<Vec<Value>> = (!keyed || key_values.len() != primary_key.len())
            .then(|| key_values.iter().map(|(_, v)| v.clone()).collect());
        let spanner_key = if keyed {
            Vec::new()
        } else {
            key_values.clone()
        };
        let mut values = key_values;
        let mut old_values = None;
        if upsert {
            let new_values = self.object(record, "newValuesJson", &the_mod.new_values_json)?;
            for (column, value) in &new_values {
                self.put(plan, record, column, value, &mut values, None)?;
            }
        } else {
            // A delete needs only the key; drop other columns the keys may carry.
            values.retain(|(index, _)| primary_key.contains(index));
            if !has_all(&values, &primary_key) {
                let new_values = self.object(record, "newValuesJson", &the_mod.new_values_json)?;
                for (column, value) in &new_values {
                    self.put(plan, record, column, value, &mut values, Some(&primary_key))?;
                }
            }
        }
        if !keyed {
            // Old values hold the key columns that are not Spanner key columns, when the stream
            // captures them.
            let old = self.object(record, "oldValuesJson", &the_mod.old_values_json)?;
            let mut converted = spanner_key.clone();
            for (column, value) in &old {
                self.put(
                    plan,
                    record,
                    column,
                    value,
                    &mut converted,
                    Some(&primary_key),
                )?;
            }
            if !upsert {
                for (index, value) in &converted {
                    if !values.iter().any(|(i, _)| i == index) {
                        values.push((*index, value.clone()));
                    }
                }
            }
            old_values = Some((old.is_empty(), converted));
        }
        let table_name = &self.plans[plan].target.name;
        let key_text = the_mod.keys_json.clone();
        if !upsert && !has_all(&values, &primary_key) {
            // A delete without the values of every key column: by its Spanner key.
            if spanner_key.is_empty() {
                let missing = primary_key
                    .iter()
                    .find(|k| !values.iter().any(|(i, _)| i == *k))
                    .copied()
                    .unwrap_or_default();
                return Err(WriterError::MissingKeyValue {
                    shard: self.shard.clone(),
                    table: table_name.clone(),
                    column: self.plans[plan].target.columns[missing].name.clone(),
                    key: key_text,
                });
            }
            let columns = self.column_set(plan, spanner_key.iter().map(|(i, _)| *i).collect());
            let values: Vec<Value> = spanner_key.into_iter().map(|(_, v)| v).collect();
            out.push(RowChange {
                plan,
                node: self.plans[plan].node,
                kind: StatementKind::DeleteBySpannerKey,
                bytes: values.iter().map(value_bytes).sum(),
                fingerprint: fingerprint(&values.iter().collect::<Vec<_>>()),
                columns,
                values,
                identity,
                row: 0,
                existed: true,
                key_text,
            });
            return Ok(());
        }
        let mut key_of_row = Vec::with_capacity(primary_key.len());
        for &key_index in primary_key.iter() {
            match values.iter().find(|(i, _)| *i == key_index) {
                Some((_, value)) => key_of_row.push(value.clone()),
                None => {
                    return Err(WriterError::MissingKeyValue {
                        shard: self.shard.clone(),
                        table: table_name.clone(),
                        column: self.plans[plan].target.columns[key_index].name.clone(),
                        key: key_text,
                    });
                }
            }
        }
        let fingerprint = fingerprint(&key_of_row.iter().collect::<Vec<_>>());
        let identity = match identity {
            Some(identity) if identity.is_empty() => Some(key_of_row.clone()),
            identity => identity,
        };
        // The row under its old key, when the update may have moved it.
        if upsert && let Some((no_old_values, old_key)) = old_values {
            let old_key: Option<Vec<Value>> = primary_key
                .iter()
                .map(|k| {
                    old_key
                        .iter()
                        .find(|(i, _)| i == k)
                        .or_else(|| values.iter().find(|(i, _)| i == k))
                        .map(|(_, v)| v.clone())
                })
                .collect();
            if let Some(old_key) = old_key.filter(|old| *old != key_of_row) {
                out.push(self.delete_change(
                    plan,
                    StatementKind::Delete,
                    Arc::clone(&primary_key),
                    old_key,
                    identity.clone(),
                    key_text.clone(),
                ));
            } else if no_old_values && record.mod_type == ModType::Update && !spanner_key.is_empty()
            {
                let (columns, mut spanner_key): (Vec<usize>, Vec<Value>) =
                    spanner_key.iter().cloned().unzip();
                let columns = columns
                    .into_iter()
                    .chain(primary_key.iter().copied())
                    .collect::<Vec<usize>>();
                spanner_key.extend(key_of_row.iter().cloned());
                out.push(self.delete_change(
                    plan,
                    StatementKind::DeleteStale,
                    columns.into(),
                    spanner_key,
                    identity.clone(),
                    key_text.clone(),
                ));
            }
        }
        let (kind, columns, values) = if upsert {
            values.sort_by_key(|(index, _)| *index);
            let columns = self.column_set(plan, values.iter().map(|(i, _)| *i).collect());
            let values: Vec<Value> = values.into_iter().map(|(_, v)| v).collect();
            (StatementKind::Upsert, columns, values)
        } else {
            (StatementKind::Delete, primary_key, key_of_row)
        };
        out.push(RowChange {
            plan,
            node: self.plans[plan].node,
            kind,
            bytes: values.iter().map(value_bytes).sum(),
            columns,
            values,
            fingerprint,
            identity,
            row: 0,
            existed: record.mod_type != ModType::Insert,
            key_text,
        });
        Ok(())
    }

    fn delete_change(
        &self,
        plan: usize,
        kind: StatementKind,
        columns: Arc<[usize]>,
        values: Vec<Value>,
        identity: Option<Vec<Value>>,
        key_text: String,
    ) -> RowChange {
        let fingerprint = match kind {
            StatementKind::Delete => fingerprint(&values.iter().collect::<Vec<_>>()),
            _ => {
                let spanner_key = values.len() - self.plans[plan].primary_key.len();
                fingerprint(&values[..spanner_key].iter().collect::<Vec<_>>())
            }
        };
        RowChange {
            plan,
            node: self.plans[plan].node,
            kind,
            bytes: values.iter().map(value_bytes).sum(),
            columns,
            values,
            fingerprint,
            identity,
            row: 0,
            existed: true,
            key_text,
        }
    }

    /// Combines the changes of each row of one transaction, in record order, into the row's
    /// net change: the deletes of the MySQL keys it leaves, then its upsert if it is present
    /// at commit (see the module documentation).
    fn combine(&mut self, changes: Vec<RowChange>) -> Vec<RowChange> {
        if changes.len() == 1 {
            return changes;
        }
        // Most transactions change each row once: nothing to combine.
        if changes.len() <= 16
            && (1..changes.len()).all(|j| (0..j).all(|i| !self.same_row(&changes[i], &changes[j])))
        {
            let mut changes = changes;
            for (row, change) in changes.iter_mut().enumerate() {
                change.row = row;
            }
            return changes;
        }
        struct Net {
            deletes: Vec<RowChange>,
            upsert: Option<RowChange>,
            existed: bool,
        }
        fn push_delete(net: &mut Net, delete: RowChange) {
            net.upsert = None;
            if !net
                .deletes
                .iter()
                .any(|d| d.kind == delete.kind && d.values == delete.values)
            {
                net.deletes.push(delete);
            }
        }
        let mut rows: Vec<Net> = Vec::new();
        // The rows seen (plan, Spanner key or MySQL key): compared one by one in small
        // transactions, hashed in large ones.
        let hashed = changes.len() > 16;
        let mut seen: Vec<(usize, bool, Vec<Value>)> = Vec::new();
        let mut index: HashMap<(usize, bool, String), usize> = HashMap::new();
        for change in changes {
            let spanner_key = change.identity.is_some();
            let table = row_table(&change);
            let known = if hashed {
                let key = (table, spanner_key, exact(self.row_values(&change)));
                let next = rows.len();
                let slot = *index.entry(key).or_insert(next);
                (slot < next).then_some(slot)
            } else {
                seen.iter().position(|(plan, by_spanner_key, key)| {
                    *plan == table
                        && *by_spanner_key == spanner_key
                        && key.len() == self.row_len(&change)
                        && key
                            .iter()
                            .enumerate()
                            .all(|(k, v)| self.row_value(&change, k) == Some(v))
                })
            };
            let slot = match known {
                Some(slot) => slot,
                None => {
                    if !hashed {
                        let key = self.row_values(&change).cloned().collect();
                        seen.push((table, spanner_key, key));
                    }
                    rows.push(Net {
                        deletes: Vec::new(),
                        upsert: None,
                        existed: change.existed,
                    });
                    rows.len() - 1
                }
            };
            if change.kind.deletes() {
                push_delete(&mut rows[slot], change);
                continue;
            }
            match rows[slot].upsert.take() {
                Some(previous) => {
                    let merged = self.merge_upserts(previous, change);
                    rows[slot].upsert = Some(merged);
                }
                None => {
                    // Written again after deletes: a delete of its own MySQL key becomes the
                    // update in place, a delete by Spanner key one of its other rows.
                    let plan = change.plan;
                    let primary_key = Arc::clone(&self.plans[plan].primary_key);
                    let key_of_row: Vec<Value> = primary_key
                        .iter()
                        .filter_map(|k| {
                            let at = change.columns.iter().position(|c| c == k)?;
                            change.values.get(at).cloned()
                        })
                        .collect();
                    let mut deletes = std::mem::take(&mut rows[slot].deletes);
                    deletes
                        .retain(|d| !(d.kind == StatementKind::Delete && d.values == key_of_row));
                    for delete in &mut deletes {
                        if delete.kind == StatementKind::DeleteBySpannerKey {
                            let columns: Vec<usize> = delete
                                .columns
                                .iter()
                                .chain(primary_key.iter())
                                .copied()
                                .collect();
                            delete.kind = StatementKind::DeleteStale;
                            delete.columns = self.column_set(plan, columns);
                            delete.values.extend(key_of_row.iter().cloned());
                            delete.bytes = delete.values.iter().map(value_bytes).sum();
                        }
                    }
                    rows[slot].deletes = deletes;
                    rows[slot].upsert = Some(change);
                }
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (row, net) in rows.into_iter().enumerate() {
            for mut delete in net.deletes {
                delete.row = row;
                out.push(delete);
            }
            if let Some(mut upsert) = net.upsert {
                upsert.existed = net.existed;
                upsert.row = row;
                out.push(upsert);
            }
        }
        out
    }

    /// The value at position `k` of the values identifying a change's row (its Spanner key
    /// values, or its MySQL key), and how many there are.
    fn row_value<'a>(&self, change: &'a RowChange, k: usize) -> Option<&'a Value> {
        match (&change.identity, change.kind) {
            (Some(identity), _) => identity.get(k),
            (None, StatementKind::Upsert) => {
                let key = *self.plans[change.plan].primary_key.get(k)?;
                let at = change.columns.iter().position(|c| *c == key)?;
                change.values.get(at)
            }
            (None, _) => change.values.get(k),
        }
    }

    /// Whether two changes are of the same row.
    fn same_row(&self, a: &RowChange, b: &RowChange) -> bool {
        row_table(a) == row_table(b)
            && a.identity.is_some() == b.identity.is_some()
            && self.row_len(a) == self.row_len(b)
            && (0..self.row_len(a)).all(|k| self.row_value(a, k) == self.row_value(b, k))
    }

    fn row_len(&self, change: &RowChange) -> usize {
        match &change.identity {
            Some(identity) => identity.len(),
            None => self.plans[change.plan].primary_key.len(),
        }
    }

    /// The values identifying a change's row.
    fn row_values<'a>(&'a self, change: &'a RowChange) -> impl Iterator<Item = &'a Value> + 'a {
        (0..self.row_len(change)).filter_map(move |k| self.row_value(change, k))
    }

    /// Two upserts of one row: the columns of both, the later one's values.
    fn merge_upserts(&mut self, previous: RowChange, later: RowChange) -> RowChange {
        let mut pairs: Vec<(usize, Value)> = previous
            .columns
            .iter()
            .copied()
            .zip(previous.values)
            .collect();
        for (&index, value) in later.columns.iter().zip(later.values) {
            match pairs.iter_mut().find(|(i, _)| *i == index) {
                Some(pair) => pair.1 = value,
                None => pairs.push((index, value)),
            }
        }
        pairs.sort_by_key(|(index, _)| *index);
        let columns = self.column_set(later.plan, pairs.iter().map(|(i, _)| *i).collect());
        let values: Vec<Value> = pairs.into_iter().map(|(_, v)| v).collect();
        RowChange {
            bytes: values.iter().map(value_bytes).sum(),
            columns,
            values,
            existed: previous.existed,
            ..later
        }
    }

    /// Orders one transaction's row changes (see the module documentation).
    fn order(&self, changes: Vec<RowChange>) -> Vec<RowChange> {
        let count = changes.len();
        if count < 2 {
            return changes;
        }
        let mut tables: Vec<usize> = Vec::new();
        for change in &changes {
            if !tables.contains(&change.node) {
                tables.push(change.node);
            }
        }
        let graph = &self.graph;
        let reorder = tables
            .iter()
            .any(|&t| graph.cyclic[t] || graph.parents[t].iter().any(|p| tables.contains(p)))
            || changes
                .iter()
                .any(|c| !self.plans[c.plan].target.unique_indexes.is_empty());
        if !reorder {
            return changes;
        }
        // Nodes 0..count are changes; barriers follow: per table "all upserts done" and
        // "every change done", per reference cycle "all upserts done".
        let mut next = count;
        let mut barriers: HashMap<usize, (usize, usize)> = HashMap::new();
        let mut cycle_upserts: HashMap<usize, usize> = HashMap::new();
        for &table in &tables {
            barriers.insert(table, (next, next + 1));
            next += 2;
            if graph.cyclic[table]
                && let Entry::Vacant(slot) = cycle_upserts.entry(graph.component[table])
            {
                slot.insert(next);
                next += 1;
            }
        }
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); next];
        let mut last_of_row: HashMap<usize, usize> = HashMap::new();
        let mut last_of_key: HashMap<(usize, &str), usize> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            let table = change.node;
            let (upserts_done, all_done) = barriers[&table];
            let cycle = graph.cyclic[table].then(|| cycle_upserts[&graph.component[table]]);
            if change.kind == StatementKind::Upsert {
                edges[i].push(upserts_done);
                for parent in &graph.parents[table] {
                    if let Some(&(parent_upserts, _)) = barriers.get(parent) {
                        edges[parent_upserts].push(i);
                    }
                }
                if let Some(cycle) = cycle {
                    edges[i].push(cycle);
                }
            } else {
                for child in &graph.children[table] {
                    if let Some(&(_, child_done)) = barriers.get(child) {
                        edges[child_done].push(i);
                    }
                }
                if let Some(cycle) = cycle {
                    edges[cycle].push(i);
                }
            }
            edges[i].push(all_done);
            if let Some(previous) = last_of_row.insert(change.row, i) {
                edges[previous].push(i);
            }
            if matches!(change.kind, StatementKind::Upsert | StatementKind::Delete)
                && let Some(previous) = last_of_key.insert((table, change.fingerprint.as_str()), i)
            {
                edges[previous].push(i);
            }
        }
        // A new row of a table that references itself before the rows referencing it.
        // (By table: a table's changes may come from several plans, records and the plugin.)
        let mut planned: Vec<(usize, usize)> = changes.iter().map(|c| (c.node, c.plan)).collect();
        planned.sort_unstable();
        planned.dedup_by_key(|(node, _)| *node);
        for (node, plan) in planned {
            for (referencing, referenced) in &self.plans[plan].self_references {
                let upserts = || {
                    changes
                        .iter()
                        .enumerate()
                        .filter(move |(_, c)| c.node == node && c.kind == StatementKind::Upsert)
                };
                let by_key: HashMap<String, usize> = upserts()
                    .filter_map(|(i, c)| Some((values_at(c, referenced)?, i)))
                    .collect();
                for (j, change) in upserts() {
                    if let Some(&i) = values_at(change, referencing).and_then(|k| by_key.get(&k))
                        && i != j
                    {
                        edges[i].push(j);
                    }
                }
            }
        }
        let mut incoming = vec![0usize; next];
        for targets in &edges {
            for &target in targets {
                incoming[target] += 1;
            }
        }
        // Barriers go first when ready; then deletes, updates, inserts, each by record order.
        let rank = |node: usize| -> (u8, u8, usize) {
            match changes.get(node) {
                None => (0, 0, node),
                Some(change) if change.kind.deletes() => (1, 0, node),
                Some(change) if change.existed => (1, 1, node),
                Some(_) => (1, 2, node),
            }
        };
        let mut ready: BinaryHeap<Reverse<(u8, u8, usize)>> = (0..next)
            .filter(|&n| incoming[n] == 0)
            .map(|n| Reverse(rank(n)))
            .collect();
        let mut order = Vec::with_capacity(count);
        while let Some(Reverse((_, _, node))) = ready.pop() {
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
                "the ordering rules of a transaction contradict each other; keeping the record order"
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
        // A table some of whose records lack MySQL key columns keeps its order, whichever
        // Spanner table (or the transformation plugin) its changes come from.
        let incomplete: HashSet<usize> = self
            .plans
            .iter()
            .filter(|plan| plan.keys_incomplete)
            .map(|plan| plan.node)
            .collect();
        for change in changes {
            let plan = &self.plans[change.plan];
            if !plan.commutes || incomplete.contains(&change.node) {
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

/// What a change's row is identified within: its plan when it is identified by Spanner key
/// values (which mean something only for its Spanner table), else its MySQL table (a row of
/// a table is the same row whether a record or the transformation plugin changes it).
fn row_table(change: &RowChange) -> usize {
    if change.identity.is_some() {
        change.plan
    } else {
        change.node
    }
}

/// Whether two changes can share a statement: same table, kind and columns.
fn same_shape(a: &RowChange, b: &RowChange) -> bool {
    a.node == b.node
        && a.kind == b.kind
        && (Arc::ptr_eq(&a.columns, &b.columns) || a.columns == b.columns)
}

/// Whether `values` has a value for each of `columns`.
fn has_all(values: &[(usize, Value)], columns: &[usize]) -> bool {
    columns.iter().all(|k| values.iter().any(|(i, _)| i == k))
}

/// The fingerprint of an upsert's values of `columns`, if it has them all and none is NULL.
fn values_at(change: &RowChange, columns: &[usize]) -> Option<String> {
    let mut values = Vec::with_capacity(columns.len());
    for column in columns {
        let at = change.columns.iter().position(|c| c == column)?;
        match change.values.get(at)? {
            Value::NULL => return None,
            value => values.push(value),
        }
    }
    Some(fingerprint(&values))
}

/// Quotes an identifier with backticks, doubling backticks inside.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The condition selecting one row of a statement of `kind` over `columns` (as in
/// [`statement_text`]), with `?` placeholders in the order of the values.
pub(crate) fn row_condition(table: &TargetTable, kind: StatementKind, columns: &[usize]) -> String {
    let name = |index: &usize| quote_identifier(&table.columns[*index].name);
    let all = |columns: &[usize]| -> String {
        let parts: Vec<String> = columns.iter().map(|i| format!("{}=?", name(i))).collect();
        parts.join(" AND ")
    };
    match kind {
        StatementKind::Upsert => all(&table.primary_key),
        StatementKind::Delete | StatementKind::DeleteBySpannerKey => all(columns),
        StatementKind::DeleteStale => {
            let split = columns.len().saturating_sub(table.primary_key.len());
            format!(
                "{} AND NOT ({})",
                all(&columns[..split]),
                all(&columns[split..])
            )
        }
    }
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
            let mut updates: Vec<String> = Vec::new();
            if !table.unique_indexes.is_empty() {
                // The duplicate met must be the row of this key: otherwise the key becomes
                // NULL, which strict mode refuses (error 1048).
                let same: Vec<String> = table
                    .primary_key
                    .iter()
                    .map(|index| {
                        let column = name(index);
                        format!("{column}<=>VALUES({column})")
                    })
                    .collect();
                let first = table.primary_key.first().map(name).unwrap_or_default();
                updates.push(format!("{first}=IF({},{first},NULL)", same.join(" AND ")));
            }
            updates.extend(
                columns
                    .iter()
                    .filter(|index| !table.primary_key.contains(index))
                    .map(|index| {
                        let column = name(index);
                        format!("{column}=VALUES({column})")
                    }),
            );
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
        StatementKind::Delete if columns.len() == 1 => {
            let column = columns.first().map(name).unwrap_or_default();
            if rows == 1 {
                format!("DELETE FROM {table_name} WHERE {column}=?")
            } else {
                format!(
                    "DELETE FROM {table_name} WHERE {column} IN ({})",
                    vec!["?"; rows].join(",")
                )
            }
        }
        _ => {
            let one = row_condition(table, kind, columns);
            let condition = if rows == 1 {
                one
            } else {
                vec![format!("({one})"); rows].join(" OR ")
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

/// Values exactly, for telling rows apart.
fn exact<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for value in values {
        let text = value.as_sql(true);
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
    use crate::transformation::TableCounts;
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

    /// `record` in transaction `txid`.
    fn in_tx(mut record: ChangeRecord, txid: &str) -> ChangeRecord {
        record.server_transaction_id = txid.into();
        record
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

    /// A transformation for planner tests: `event` records become an upsert of `parent`
    /// (name = the event's `v`) plus an upsert of `event`; `child` records are dropped; a
    /// record whose `v` is `"bad-table"`, `"bad-column"`, `"long"` or `"refuse"` gets the
    /// matching mistake; everything else is kept.
    #[derive(Debug)]
    struct Reshape;

    impl RecordTransformer for Reshape {
        fn name(&self) -> &str {
            "/plugins/libreshape.so"
        }

        fn transform(
            &self,
            _shard: &ShardId,
            record: &ChangeRecord,
        ) -> Result<Transformed, TransformationProblem> {
            let keys: Map<String, Json> =
                serde_json::from_str(&record.the_mod().keys_json).expect("test keys");
            let values: Map<String, Json> =
                serde_json::from_str(&record.the_mod().new_values_json).expect("test values");
            let id = keys["id"].clone();
            let v = values.get("v").cloned().unwrap_or(Json::Null);
            let row = |table: &str| SourceRow::upsert(table).set("id", id.clone());
            match (record.table_name.as_str(), v.as_str()) {
                (_, Some("refuse")) => Err(TransformationProblem::Refused("no".into())),
                (_, Some("bad-table")) => Ok(Transformed::rows([row("nowhere")])),
                (_, Some("bad-column")) => Ok(Transformed::rows([row("parent").set("nope", 1)])),
                (_, Some("long")) => Ok(Transformed::rows([
                    row("parent").set("name", "far too long for ten")
                ])),
                ("event", _) if record.mod_type == ModType::Delete => Ok(Transformed::rows([
                    SourceRow::delete("event")
                        .set("id", id.clone())
                        .set("v", "ignored"),
                    SourceRow::delete("parent").set("id", id.clone()),
                ])),
                ("event", _) => Ok(Transformed::rows([
                    row("parent").set("name", v.clone()),
                    row("event").set("v", v.clone()),
                ])),
                ("child", _) => Ok(Transformed::Drop),
                _ => Ok(Transformed::Keep),
            }
        }
    }

    fn transforming(limits: StatementLimits) -> StatementPlanner {
        planner(limits).with_transformer(Some(Arc::new(Reshape)))
    }

    #[test]
    fn plugin_rows_are_planned_like_records_in_the_plugins_tables_and_counted() {
        let mut p = transforming(StatementLimits::default());
        let statements = plan(
            &mut p,
            vec![
                record("event", ModType::Insert, r#"{"id":"1"}"#, r#"{"v":"a"}"#, 0),
                record(
                    "child",
                    ModType::Insert,
                    r#"{"id":"5"}"#,
                    r#"{"parent_id":"1"}"#,
                    1,
                ),
                record(
                    "node",
                    ModType::Insert,
                    r#"{"id":"7"}"#,
                    r#"{"up":null}"#,
                    2,
                ),
            ],
        );
        assert_eq!(
            shape(&statements),
            // `event` commutes across keys: merged in rounds after the other tables.
            vec!["parent:Upsert:1", "node:Upsert:1", "event:Upsert:1"],
            "{statements:#?}"
        );
        assert_eq!(
            statements[0].params,
            vec![Value::Int(1), Value::Bytes(b"a".to_vec())]
        );
        assert_eq!(statements[0].keys, vec![r#"{"id":"1"}"#.to_string()]);
        let counts = p.take_transform_counts();
        let by_table: Vec<(&str, TableCounts)> = counts.tables().map(|(t, c)| (t, *c)).collect();
        assert_eq!(
            by_table,
            vec![
                (
                    "child",
                    TableCounts {
                        dropped: 1,
                        ..Default::default()
                    }
                ),
                (
                    "event",
                    TableCounts {
                        transformed: 1,
                        ..Default::default()
                    }
                ),
                (
                    "node",
                    TableCounts {
                        kept: 1,
                        ..Default::default()
                    }
                ),
            ]
        );
        assert!(p.take_transform_counts().is_empty(), "taken once");
    }

    #[test]
    fn a_plugin_row_and_a_kept_record_of_the_same_row_combine_into_its_net_change() {
        let mut p = transforming(StatementLimits::default());
        // The plugin upserts parent 1; the kept parent record then deletes it, in the same
        // transaction: the net effect is one delete.
        let statements = plan(
            &mut p,
            vec![
                record("event", ModType::Insert, r#"{"id":"1"}"#, r#"{"v":"a"}"#, 0),
                record("parent", ModType::Delete, r#"{"id":"1"}"#, "{}", 1),
            ],
        );
        assert_eq!(
            shape(&statements),
            vec!["parent:Delete:1", "event:Upsert:1"],
            "{statements:#?}"
        );
        // A plugin delete carries only the key, whatever else it names.
        let statements = plan(
            &mut p,
            vec![in_tx(
                record("event", ModType::Delete, r#"{"id":"2"}"#, "{}", 0),
                "t2",
            )],
        );
        assert_eq!(
            shape(&statements),
            vec!["parent:Delete:1", "event:Delete:1"]
        );
        assert_eq!(
            statements[1].sql.as_ref(),
            "DELETE FROM `event` WHERE `id`=?"
        );
    }

    #[test]
    fn plugin_mistakes_are_definite_errors_naming_the_plugin_table_and_key() {
        use revrepl_record::Classify;
        for (v, expected, record_fault) in [
            ("refuse", "refused the record: no", true),
            (
                "bad-table",
                "wrote to table \"nowhere\", which does not exist in database \"db\"",
                false,
            ),
            (
                "bad-column",
                "wrote column \"nope\", which table \"parent\" does not have",
                false,
            ),
            (
                "long",
                "gave column name (varchar(10)) of table parent a value that does not fit",
                true,
            ),
        ] {
            let mut p = transforming(StatementLimits::default());
            let values = format!(r#"{{"v":"{v}"}}"#);
            let transactions = SpannerTransaction::group(vec![record(
                "event",
                ModType::Update,
                r#"{"id":"9"}"#,
                &values,
                0,
            )]);
            let error = p.plan(&transactions).expect_err(v);
            let text = error.to_string();
            for part in [
                "shard s1",
                "transformation plugin \"/plugins/libreshape.so\"",
                expected,
                "Spanner table \"event\"",
                r#"key {"id":"9"}"#,
            ] {
                assert!(text.contains(part), "{v}: {part:?} missing from {text}");
            }
            assert!(
                !text.contains("far too long"),
                "no values in errors: {text}"
            );
            assert_eq!(error.class(), revrepl_record::ErrorClass::Definite, "{v}");
            assert_eq!(error.is_record_fault(), record_fault, "{v}");
        }
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
                in_tx(
                    record(
                        "parent",
                        ModType::Update,
                        r#"{"id":"1"}"#,
                        r#"{"name":"c"}"#,
                        0,
                    ),
                    "tx2",
                ),
                in_tx(
                    record("parent", ModType::Delete, r#"{"id":"3"}"#, "{}", 1),
                    "tx2",
                ),
                in_tx(
                    record("parent", ModType::Delete, r#"{"id":"4"}"#, "{}", 2),
                    "tx2",
                ),
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
        // One transaction per record (within one, a key's records are combined first).
        let separate = |records: Vec<ChangeRecord>| -> Vec<ChangeRecord> {
            records
                .into_iter()
                .enumerate()
                .map(|(i, r)| in_tx(r, &format!("t{i:02}")))
                .collect()
        };
        let statements = plan(
            &mut p,
            separate(vec![
                up(1, "a", 0),
                del(2, 1),
                up(3, "b", 2),
                up(1, "c", 3),
                del(4, 4),
                up(5, "d", 5),
                del(1, 6),
                record("parent", ModType::Insert, r#"{"id":"9"}"#, "{}", 7),
            ]),
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
                .with_unique_index("uv", &["v"]),
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
        let statements = plan(
            &mut p,
            separate(vec![up(1, "a", 0), del(2, 1), up(3, "b", 2)]),
        );
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
        // Deletes first where the foreign keys allow it (the child's), a parent's upsert
        // before its child's, the parent's delete after every change of the child.
        assert_eq!(
            shape(&statements),
            vec![
                "child:Delete:1",
                "parent:Upsert:1",
                "child:Upsert:1",
                "parent:Delete:1"
            ]
        );
    }

    #[test]
    fn combines_a_rows_records_and_keeps_self_reference_deletes_apart() {
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
        // Key 1 of `parent`: inserted, updated, deleted and inserted again in one transaction
        // is one upsert of its last values (no delete, which would cascade). Deletes of a
        // table referencing itself are not merged.
        assert_eq!(
            shape(&statements),
            vec!["node:Delete:1", "node:Delete:1", "parent:Upsert:1"]
        );
        assert_eq!(
            statements[2].params,
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

    fn planner_for(tables: Vec<TargetTable>, foreign_keys: Vec<ForeignKey>) -> StatementPlanner {
        StatementPlanner::new(
            ShardId::new("s1").expect("valid shard"),
            Arc::new(TargetSchema::new("db", tables, foreign_keys)),
            Arc::new(SchemaMapping::identity()),
            SourceTimeZone::default(),
            StatementLimits::default(),
        )
    }

    fn users() -> TargetTable {
        TargetTable::new(
            "u",
            vec![
                TargetColumn::new("id", "int").not_null(),
                TargetColumn::new("email", "varchar(20)"),
            ],
            &["id"],
        )
        .with_unique_index("by_email", &["email"])
    }

    #[test]
    fn upserts_of_tables_with_unique_indexes_never_update_another_row() {
        let mut p = planner_for(vec![users()], Vec::new());
        let statements = plan(
            &mut p,
            vec![record(
                "u",
                ModType::Insert,
                r#"{"id":"1"}"#,
                r#"{"email":"x"}"#,
                0,
            )],
        );
        assert_eq!(
            &*statements[0].sql,
            "INSERT INTO `u` (`id`,`email`) VALUES (?,?) ON DUPLICATE KEY UPDATE \
             `id`=IF(`id`<=>VALUES(`id`),`id`,NULL),`email`=VALUES(`email`)"
        );
    }

    #[test]
    fn unique_tables_order_deletes_then_updates_then_inserts() {
        let mut p = planner_for(vec![users()], Vec::new());
        let change = |kind, id: u32, email: &str, seq| {
            record(
                "u",
                kind,
                &format!(r#"{{"id":"{id}"}}"#),
                &format!(r#"{{"email":"{email}"}}"#),
                seq,
            )
        };
        let statements = plan(
            &mut p,
            vec![
                change(ModType::Insert, 3, "x", 0),
                change(ModType::Update, 2, "y", 1),
                record("u", ModType::Delete, r#"{"id":"1"}"#, "{}", 2),
                change(ModType::Insert, 4, "z", 3),
                change(ModType::Update, 5, "w", 4),
            ],
        );
        let keys: Vec<String> = statements.iter().map(|s| s.keys.join("+")).collect();
        // One multi-row upsert: its rows are applied in this order.
        assert_eq!(
            keys,
            vec![
                r#"{"id":"1"}"#,
                r#"{"id":"2"}+{"id":"5"}+{"id":"3"}+{"id":"4"}"#
            ]
        );
    }

    #[test]
    fn new_rows_of_a_self_referencing_table_come_after_their_parents() {
        let mut p = planner(StatementLimits {
            max_rows: 1,
            max_bytes: usize::MAX,
        });
        let node = |id: u32, up: &str, seq| {
            record(
                "node",
                ModType::Insert,
                &format!(r#"{{"id":"{id}"}}"#),
                &format!(r#"{{"up":{up}}}"#),
                seq,
            )
        };
        let statements = plan(
            &mut p,
            vec![
                node(3, r#""2""#, 0),
                node(2, r#""1""#, 1),
                node(1, "null", 2),
                record("node", ModType::Delete, r#"{"id":"9"}"#, "{}", 3),
            ],
        );
        let keys: Vec<&str> = statements.iter().map(|s| s.keys[0].as_str()).collect();
        // All upserts before deletes in a table referencing itself; parents first.
        assert_eq!(
            keys,
            vec![
                r#"{"id":"1"}"#,
                r#"{"id":"2"}"#,
                r#"{"id":"3"}"#,
                r#"{"id":"9"}"#
            ]
        );
    }

    #[test]
    fn a_key_column_spanner_does_not_key_on_moves_the_row() {
        let moved = TargetTable::new(
            "m",
            vec![
                TargetColumn::new("id", "int").not_null(),
                TargetColumn::new("region", "varchar(5)").not_null(),
                TargetColumn::new("v", "varchar(5)"),
            ],
            &["id", "region"],
        );
        let mut p = planner_for(vec![moved], Vec::new());
        let update = |id: u32, old: &str, seq| {
            let mut r = in_tx(
                record(
                    "m",
                    ModType::Update,
                    &format!(r#"{{"id":"{id}"}}"#),
                    r#"{"region":"us","v":"b"}"#,
                    seq,
                ),
                &format!("t{id}"),
            );
            r.mods[0].old_values_json = old.into();
            r
        };
        let statements = plan(
            &mut p,
            vec![
                update(1, r#"{"region":"eu","v":"a"}"#, 0),
                update(2, r#"{"v":"a"}"#, 0),
                update(3, "{}", 0),
                in_tx(record("m", ModType::Delete, r#"{"id":"4"}"#, "{}", 0), "t4"),
            ],
        );
        let sql: Vec<&str> = statements.iter().map(|s| &*s.sql).collect();
        let upsert = "INSERT INTO `m` (`id`,`region`,`v`) VALUES (?,?,?),(?,?,?) ON DUPLICATE \
                      KEY UPDATE `v`=VALUES(`v`)";
        let upsert_one = "INSERT INTO `m` (`id`,`region`,`v`) VALUES (?,?,?) ON DUPLICATE \
                          KEY UPDATE `v`=VALUES(`v`)";
        assert_eq!(
            sql,
            vec![
                // Old values name the old key.
                "DELETE FROM `m` WHERE `id`=? AND `region`=?",
                // The region did not change (not in the old values): just the upsert.
                upsert,
                // No old values: every other row of the Spanner key.
                "DELETE FROM `m` WHERE `id`=? AND NOT (`id`=? AND `region`=?)",
                upsert_one,
                // A delete without old values: by the Spanner key.
                "DELETE FROM `m` WHERE `id`=?",
            ]
        );
        assert_eq!(
            statements[0].params,
            vec![Value::Int(1), Value::Bytes(b"eu".to_vec())]
        );
    }
}
