//! Applying one Spanner transaction row by row, when its planned statements met a unique-index
//! or foreign-key conflict that the planned order could not avoid (a swap of unique values, a
//! chain of moves in the wrong order, rows of a self-referencing table deleted parent first).
//! See `docs/decisions/0007-unique-indexes-and-conflicts.md`.
//!
//! Each row change of the transaction (combined per row by [`crate::statement`]) is applied on
//! its own, by key, with what MySQL holds now:
//!
//! - a present row is updated by its primary key when it exists, inserted otherwise — never an
//!   `ON DUPLICATE KEY UPDATE` that could change another row;
//! - an absent row is deleted by its key, but not while a row that the transaction still has
//!   to write references it through an `ON DELETE CASCADE`/`SET NULL` foreign key (the delete
//!   would take that row along);
//! - a change that meets a conflict waits; a row whose unique value is held by another row of
//!   the transaction waits for that row, which goes first;
//! - when the holder cannot go first (a swap, or a deleted holder still referenced by rows the
//!   transaction re-points), its value is freed: its column set to `NULL` when the unique index
//!   has a nullable column that no foreign key references; otherwise a row the transaction
//!   keeps is deleted with foreign-key checks off (so nothing cascades) and inserted again
//!   later with its final values over its previous ones, and a row the transaction deletes is
//!   deleted now — what MySQL's cascades would do to rows outside the transaction done first,
//!   by hand, then the row deleted with checks off (the rows still referencing it are
//!   re-pointed by the transaction) — or the waiting row first writes its columns outside
//!   unique indexes (its new references);
//! - a cycle of references among new rows is broken by writing one first with its nullable
//!   references `NULL`; a cycle of references among deleted rows by setting one's nullable
//!   references to `NULL` before its delete.
//!
//! A unique value held by a row the transaction does not change means MySQL is not in the
//! state Spanner had before the transaction: the transaction fails, naming both keys. Whatever
//! fails, the whole MySQL transaction is rolled back by the caller.

use std::collections::HashSet;
use std::sync::Arc;

use mysql_async::{Row, Value};
use revrepl_record::{ErrorClass, ShardId};

use crate::apply::Session;
use crate::error::{MySqlFailure, WriterError};
use crate::schema::{TargetSchema, TargetTable};
use crate::statement::{RowOp, StatementKind, quote_identifier, row_condition};

/// Unique conflicts: duplicate key (1062, 1586, 1022, 1169).
const UNIQUE_CODES: &[u16] = &[1022, 1062, 1169, 1586];
/// A parent row is missing (1452, 1216).
const PARENT_CODES: &[u16] = &[1216, 1452];
/// A child row still references the row (1451, 1217).
const CHILD_CODES: &[u16] = &[1217, 1451];
/// Most row conditions in one `CASE` probe.
const PROBE_CHUNK: usize = 256;

/// Server error codes a different order of the same row changes may avoid.
pub(crate) fn resolvable(code: u16) -> bool {
    code == 1048
        || UNIQUE_CODES.contains(&code)
        || PARENT_CODES.contains(&code)
        || CHILD_CODES.contains(&code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Unique,
    ParentMissing,
    ChildExists,
    /// A delete that would cascade to a row the transaction still writes.
    Cascade,
}

#[derive(Debug)]
struct Blocked {
    reason: Reason,
    error: Option<WriterError>,
}

/// What a row change's write looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its final values.
    Full,
    /// First with its nullable references `NULL` (a cycle of references), then [`Stage::Full`].
    ReferencesFirst,
}

#[derive(Debug)]
struct Op {
    row: RowOp,
    done: bool,
    blocked: Option<Blocked>,
    stage: Stage,
    /// Unique indexes (positions in the table's list) whose value this row gave up.
    freed: Vec<usize>,
    /// The row's previous values, when it was deleted to free its unique values.
    aside: Option<Vec<(usize, Value)>>,
    /// Deletes: whether the row's nullable references were set to `NULL` first; upserts:
    /// whether the row was written with its references `NULL` first.
    references_cleared: bool,
    /// Upserts: whether the row's columns outside unique indexes were written first.
    written_around: bool,
}

/// A foreign key referencing a table.
#[derive(Debug)]
struct Child {
    table: Arc<TargetTable>,
    /// The referencing columns.
    columns: Vec<usize>,
    /// The referenced columns (of the referenced table).
    referenced: Vec<usize>,
    /// What a delete of the referenced row does to referencing rows.
    rule: Rule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Restrict,
    Cascade,
    SetNull,
}

/// What the schema says about one table, for this module.
#[derive(Debug, Default)]
struct Relations {
    /// Foreign keys referencing the table.
    children: Vec<Child>,
    /// Those whose delete rule changes the child rows: (child table, child columns,
    /// referenced columns of this table).
    cascading: Vec<(Arc<TargetTable>, Vec<usize>, Vec<usize>)>,
    /// Whether any foreign key references the table.
    referenced: bool,
    /// Columns of the table that foreign keys reference.
    referenced_columns: HashSet<usize>,
    /// Columns of the table's own foreign keys whose columns are all nullable.
    nullable_references: Vec<usize>,
}

fn relations(schema: &TargetSchema, table: &TargetTable) -> Relations {
    let mut out = Relations::default();
    let indexes = |target: &TargetTable, names: &[String]| -> Option<Vec<usize>> {
        names
            .iter()
            .map(|n| target.column(n).map(|(i, _)| i))
            .collect()
    };
    for fk in schema.foreign_keys() {
        if fk.referenced_table == table.name {
            out.referenced = true;
            if let Some(columns) = indexes(table, &fk.referenced_columns) {
                out.referenced_columns.extend(columns.iter().copied());
                let rule = match fk.delete_rule.to_ascii_uppercase().as_str() {
                    "CASCADE" => Rule::Cascade,
                    rule if rule.starts_with("SET") => Rule::SetNull,
                    _ => Rule::Restrict,
                };
                if let Some(child) = schema.table(&fk.table)
                    && let Some(child_columns) = indexes(child, &fk.columns)
                {
                    if rule != Rule::Restrict {
                        out.cascading.push((
                            Arc::clone(child),
                            child_columns.clone(),
                            columns.clone(),
                        ));
                    }
                    out.children.push(Child {
                        table: Arc::clone(child),
                        columns: child_columns,
                        referenced: columns,
                        rule,
                    });
                }
            }
        }
        if fk.table == table.name
            && let Some(columns) = indexes(table, &fk.columns)
            && columns.iter().all(|&c| table.columns[c].nullable)
        {
            out.nullable_references.extend(columns);
        }
    }
    out
}

/// Applies the row changes of one transaction (in their planned order) row by row.
pub(crate) async fn apply_rows(
    session: &mut Session<'_>,
    schema: &TargetSchema,
    rows: Vec<RowOp>,
) -> Result<(), WriterError> {
    let mut careful = Careful {
        schema,
        ops: rows
            .into_iter()
            .map(|row| Op {
                row,
                done: false,
                blocked: None,
                stage: Stage::Full,
                freed: Vec::new(),
                aside: None,
                references_cleared: false,
                written_around: false,
            })
            .collect(),
        relations: Vec::new(),
    };
    careful.run(session).await
}

struct Careful<'s> {
    schema: &'s TargetSchema,
    ops: Vec<Op>,
    relations: Vec<(String, Arc<Relations>)>,
}

/// What one attempt did.
enum Attempt {
    /// The row change is applied.
    Done,
    /// A first step is done (the row is written with its references `NULL`).
    Progress,
    /// It has to wait.
    Blocked(Blocked),
}

impl Careful<'_> {
    async fn run(&mut self, session: &mut Session<'_>) -> Result<(), WriterError> {
        loop {
            let mut progress = false;
            for start in 0..self.ops.len() {
                if !self.ops[start].done {
                    progress |= self.settle(session, start).await?;
                }
            }
            if self.ops.iter().all(|op| op.done) {
                return Ok(());
            }
            if progress {
                continue;
            }
            if !self.break_reference_cycle(session).await? {
                return Err(self.failure(session));
            }
        }
    }

    fn relations(&mut self, table: &TargetTable) -> Arc<Relations> {
        if let Some((_, known)) = self.relations.iter().find(|(n, _)| *n == table.name) {
            return Arc::clone(known);
        }
        let made = Arc::new(relations(self.schema, table));
        self.relations.push((table.name.clone(), Arc::clone(&made)));
        made
    }

    /// Applies op `start`, first the pending rows holding unique values it needs (depth
    /// first), freeing one row's value where they form a cycle. Whether anything was done.
    async fn settle(
        &mut self,
        session: &mut Session<'_>,
        start: usize,
    ) -> Result<bool, WriterError> {
        let mut progress = false;
        let mut path = vec![start];
        while let Some(&current) = path.last() {
            match self.attempt(session, current).await? {
                Attempt::Done => {
                    self.ops[current].done = true;
                    self.ops[current].blocked = None;
                    progress = true;
                    path.pop();
                }
                Attempt::Progress => {
                    progress = true;
                    path.pop();
                }
                Attempt::Blocked(blocked) => {
                    let unique = blocked.reason == Reason::Unique;
                    self.ops[current].blocked = Some(blocked);
                    if !unique {
                        // It cannot go now; if a change below it in the path waits for its
                        // unique value, free that value instead.
                        path.pop();
                        let Some(&waiting) = path.last() else {
                            break;
                        };
                        // Or the waiting row moves first what it can: its other columns (its
                        // references, which may be what keeps `current` from going).
                        if self.free(session, current, waiting).await?
                            || self.write_around_unique(session, waiting).await?
                        {
                            progress = true;
                            continue;
                        }
                        break;
                    }
                    match self.holder(session, current).await? {
                        Holder::Pending(holder) if !path.contains(&holder) => path.push(holder),
                        Holder::Pending(holder) => {
                            // A cycle: free the holder's value, then try again.
                            if self.free(session, holder, current).await? {
                                progress = true;
                            } else {
                                break;
                            }
                        }
                        Holder::Other(error) => {
                            self.ops[current].blocked = Some(Blocked {
                                reason: Reason::Unique,
                                error: Some(error),
                            });
                            break;
                        }
                        Holder::Unknown => break,
                    }
                }
            }
        }
        Ok(progress)
    }

    async fn attempt(
        &mut self,
        session: &mut Session<'_>,
        index: usize,
    ) -> Result<Attempt, WriterError> {
        if self.ops[index].row.kind == StatementKind::Upsert {
            self.write(session, index).await
        } else {
            self.delete(session, index).await
        }
    }

    /// The primary-key values of an upsert.
    fn key_of(op: &Op) -> Vec<Value> {
        let table = &op.row.table;
        table
            .primary_key
            .iter()
            .map(|k| {
                op.row
                    .columns
                    .iter()
                    .position(|c| c == k)
                    .and_then(|at| op.row.values.get(at).cloned())
                    .unwrap_or(Value::NULL)
            })
            .collect()
    }

    /// The condition selecting op's row and its parameters.
    fn condition_of(op: &Op) -> (String, Vec<Value>) {
        let table = &op.row.table;
        match op.row.kind {
            StatementKind::Upsert => (
                row_condition(table, StatementKind::Upsert, &[]),
                Self::key_of(op),
            ),
            kind => (
                row_condition(table, kind, &op.row.columns),
                op.row.values.clone(),
            ),
        }
    }

    fn context(op: &Op, detail: &str) -> String {
        let verb = if op.row.kind == StatementKind::Upsert {
            "upsert"
        } else {
            "delete"
        };
        format!(
            " ({verb} on table {}, key {}{detail})",
            op.row.table.name, op.row.key_text
        )
    }

    fn classify(
        session: &Session<'_>,
        op: &Op,
        error: mysql_async::Error,
    ) -> Result<Attempt, WriterError> {
        let code = match &error {
            mysql_async::Error::Server(server) => Some(server.code),
            _ => None,
        };
        let reason = match code {
            Some(code) if UNIQUE_CODES.contains(&code) => Reason::Unique,
            Some(code) if PARENT_CODES.contains(&code) => Reason::ParentMissing,
            Some(code) if CHILD_CODES.contains(&code) => Reason::ChildExists,
            _ => {
                return Err(WriterError::database(
                    session.shard,
                    "applying a statement",
                    Self::context(op, ""),
                    &error,
                ));
            }
        };
        Ok(Attempt::Blocked(Blocked {
            reason,
            error: Some(WriterError::database(
                session.shard,
                "applying a statement",
                Self::context(op, ""),
                &error,
            )),
        }))
    }

    /// Updates the row by key if it exists, inserts it otherwise.
    async fn write(
        &mut self,
        session: &mut Session<'_>,
        index: usize,
    ) -> Result<Attempt, WriterError> {
        let table = Arc::clone(&self.ops[index].row.table);
        let relations = self.relations(&table);
        let op = &self.ops[index];
        let mut pairs: Vec<(usize, Value)> = match &op.aside {
            Some(previous) => previous.clone(),
            None => Vec::new(),
        };
        for (&column, value) in op.row.columns.iter().zip(&op.row.values) {
            match pairs.iter_mut().find(|(c, _)| *c == column) {
                Some(pair) => pair.1 = value.clone(),
                None => pairs.push((column, value.clone())),
            }
        }
        if op.stage == Stage::ReferencesFirst {
            for (column, value) in &mut pairs {
                if relations.nullable_references.contains(column) {
                    *value = Value::NULL;
                }
            }
        }
        let key = Self::key_of(op);
        let key_condition = row_condition(&table, StatementKind::Upsert, &[]);
        let table_name = quote_identifier(&table.name);
        let exists = if op.aside.is_some() {
            false
        } else {
            let sql = format!("SELECT 1 FROM {table_name} WHERE {key_condition} FOR UPDATE");
            let found = session.rows(&sql, key.clone()).await.map_err(|e| {
                WriterError::database(
                    session.shard,
                    "applying a statement",
                    Self::context(op, ""),
                    &e,
                )
            })?;
            !found.is_empty()
        };
        let result = if exists {
            let assignments: Vec<(usize, Value)> = pairs
                .into_iter()
                .filter(|(c, _)| !table.primary_key.contains(c))
                .collect();
            if assignments.is_empty() {
                Ok(())
            } else {
                let set: Vec<String> = assignments
                    .iter()
                    .map(|(c, _)| format!("{}=?", quote_identifier(&table.columns[*c].name)))
                    .collect();
                let sql = format!(
                    "UPDATE {table_name} SET {} WHERE {key_condition}",
                    set.join(",")
                );
                let mut params: Vec<Value> = assignments.into_iter().map(|(_, v)| v).collect();
                params.extend(key);
                session.exec(&sql, params).await
            }
        } else {
            pairs.sort_by_key(|(c, _)| *c);
            let names: Vec<String> = pairs
                .iter()
                .map(|(c, _)| quote_identifier(&table.columns[*c].name))
                .collect();
            let sql = format!(
                "INSERT INTO {table_name} ({}) VALUES ({})",
                names.join(","),
                vec!["?"; names.len()].join(",")
            );
            session
                .exec(&sql, pairs.into_iter().map(|(_, v)| v).collect())
                .await
        };
        let op = &mut self.ops[index];
        match result {
            Ok(()) if op.stage == Stage::ReferencesFirst => {
                op.stage = Stage::Full;
                op.aside = None;
                Ok(Attempt::Progress)
            }
            Ok(()) => Ok(Attempt::Done),
            Err(error) => Self::classify(session, op, error),
        }
    }

    /// Writes an existing row's final values except its primary and unique-index columns.
    /// Whether it did.
    async fn write_around_unique(
        &mut self,
        session: &mut Session<'_>,
        index: usize,
    ) -> Result<bool, WriterError> {
        let op = &self.ops[index];
        if op.row.kind != StatementKind::Upsert || op.written_around || op.aside.is_some() {
            return Ok(false);
        }
        let table = Arc::clone(&op.row.table);
        let assignments: Vec<(usize, Value)> = op
            .row
            .columns
            .iter()
            .zip(&op.row.values)
            .filter(|(c, _)| {
                !table.primary_key.contains(c)
                    && !table.unique_indexes.iter().any(|u| u.columns.contains(c))
            })
            .map(|(c, v)| (*c, v.clone()))
            .collect();
        let key = Self::key_of(op);
        self.ops[index].written_around = true;
        if assignments.is_empty() {
            return Ok(false);
        }
        let set: Vec<String> = assignments
            .iter()
            .map(|(c, _)| format!("{}=?", quote_identifier(&table.columns[*c].name)))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            quote_identifier(&table.name),
            set.join(","),
            row_condition(&table, StatementKind::Upsert, &[])
        );
        let mut params: Vec<Value> = assignments.into_iter().map(|(_, v)| v).collect();
        params.extend(key);
        match session.exec(&sql, params).await {
            // Zero rows when the row does not exist yet: nothing changed, nothing gained.
            Ok(()) => Ok(session.affected_rows() > 0),
            Err(error) if is_constraint(&error) => Ok(false),
            Err(error) => Err(WriterError::database(
                session.shard,
                "resolving a conflict",
                Self::context(&self.ops[index], ""),
                &error,
            )),
        }
    }

    /// Deletes the row, unless that would cascade to a row the transaction still writes.
    async fn delete(
        &mut self,
        session: &mut Session<'_>,
        index: usize,
    ) -> Result<Attempt, WriterError> {
        let table = Arc::clone(&self.ops[index].row.table);
        let relations = self.relations(&table);
        let (condition, params) = Self::condition_of(&self.ops[index]);
        let table_name = quote_identifier(&table.name);
        for (child, child_columns, referenced) in &relations.cascading {
            let writes: Vec<usize> = (0..self.ops.len())
                .filter(|&i| {
                    let op = &self.ops[i];
                    !op.done
                        && op.row.kind == StatementKind::Upsert
                        && op.row.table.name == child.name
                })
                .collect();
            if writes.is_empty() {
                continue;
            }
            let names = |table: &TargetTable, columns: &[usize]| -> String {
                let names: Vec<String> = columns
                    .iter()
                    .map(|c| quote_identifier(&table.columns[*c].name))
                    .collect();
                names.join(",")
            };
            let filter = format!(
                "({}) IN (SELECT {} FROM {table_name} WHERE {condition})",
                names(child, child_columns),
                names(&table, referenced)
            );
            let found = self
                .probe(session, child, &writes, &filter, params.clone())
                .await?;
            if found.is_some() {
                return Ok(Attempt::Blocked(Blocked {
                    reason: Reason::Cascade,
                    error: None,
                }));
            }
        }
        let sql = format!("DELETE FROM {table_name} WHERE {condition}");
        match session.exec(&sql, params).await {
            Ok(()) => Ok(Attempt::Done),
            Err(error) => Self::classify(session, &self.ops[index], error),
        }
    }

    /// Which of the pending row changes `candidates` (all of `table`) selects a row of `table`
    /// matching `filter` (with `filter_params`); `None` when none does.
    async fn probe(
        &self,
        session: &mut Session<'_>,
        table: &TargetTable,
        candidates: &[usize],
        filter: &str,
        filter_params: Vec<Value>,
    ) -> Result<Option<usize>, WriterError> {
        for chunk in candidates.chunks(PROBE_CHUNK) {
            let mut cases = String::new();
            let mut params = Vec::new();
            for (position, &i) in chunk.iter().enumerate() {
                let (condition, values) = Self::condition_of(&self.ops[i]);
                cases.push_str(&format!(" WHEN ({condition}) THEN {position}"));
                params.extend(values);
            }
            params.extend(filter_params.iter().cloned());
            let sql = format!(
                "SELECT CASE{cases} ELSE -1 END FROM {} WHERE {filter} FOR UPDATE",
                quote_identifier(&table.name)
            );
            let rows = session.rows(&sql, params).await.map_err(|e| {
                WriterError::database(session.shard, "resolving a conflict", String::new(), &e)
            })?;
            for row in rows {
                let position: Option<i64> = row.get(0);
                if let Some(position) = position.and_then(|p| usize::try_from(p).ok()) {
                    return Ok(chunk.get(position).copied());
                }
            }
        }
        Ok(None)
    }

    /// The row holding a unique value that op `index` (an upsert blocked by a duplicate)
    /// needs.
    async fn holder(
        &mut self,
        session: &mut Session<'_>,
        index: usize,
    ) -> Result<Holder, WriterError> {
        let op = &self.ops[index];
        if op.row.kind != StatementKind::Upsert {
            return Ok(Holder::Unknown);
        }
        let table = Arc::clone(&op.row.table);
        let key = Self::key_of(op);
        let key_condition = row_condition(&table, StatementKind::Upsert, &[]);
        let candidates: Vec<usize> = (0..self.ops.len())
            .filter(|&i| {
                i != index && !self.ops[i].done && self.ops[i].row.table.name == table.name
            })
            .collect();
        for unique in &table.unique_indexes {
            let mut values = Vec::with_capacity(unique.columns.len());
            for column in &unique.columns {
                match op.row.columns.iter().position(|c| c == column) {
                    Some(at) => values.push(op.row.values[at].clone()),
                    None => break,
                }
            }
            if unique.columns.is_empty()
                || values.len() != unique.columns.len()
                || values.contains(&Value::NULL)
            {
                continue;
            }
            let parts: Vec<String> = unique
                .columns
                .iter()
                .map(|c| format!("{}=?", quote_identifier(&table.columns[*c].name)))
                .collect();
            let filter = format!("{} AND NOT ({key_condition})", parts.join(" AND "));
            let mut filter_params = values;
            filter_params.extend(key.iter().cloned());
            if let Some(holder) = self
                .probe(session, &table, &candidates, &filter, filter_params.clone())
                .await?
            {
                return Ok(Holder::Pending(holder));
            }
            // Held by a row the transaction does not change (or already wrote)?
            let names: Vec<String> = table
                .primary_key
                .iter()
                .map(|k| {
                    format!(
                        "CAST({} AS CHAR)",
                        quote_identifier(&table.columns[*k].name)
                    )
                })
                .collect();
            let sql = format!(
                "SELECT CONCAT_WS(', ', {}) FROM {} WHERE {filter}",
                names.join(","),
                quote_identifier(&table.name)
            );
            let rows: Vec<Row> = session.rows(&sql, filter_params).await.map_err(|e| {
                WriterError::database(session.shard, "resolving a conflict", String::new(), &e)
            })?;
            if let Some(row) = rows.first() {
                let other: Option<String> = row.get(0);
                let detail = format!(
                    ": unique index {} holds the value for the row with primary key ({}), \
                     which this transaction does not free — MySQL differs from Spanner",
                    unique.name,
                    other.unwrap_or_default()
                );
                let op = &mut self.ops[index];
                let context = Self::context(op, &detail);
                let error = match op.blocked.take().and_then(|b| b.error) {
                    Some(WriterError::Database {
                        shard,
                        operation,
                        failure,
                        class,
                        ..
                    }) => WriterError::Database {
                        shard,
                        operation,
                        context,
                        failure,
                        class,
                    },
                    _ => unresolved(session.shard, context),
                };
                return Ok(Holder::Other(error));
            }
        }
        Ok(Holder::Unknown)
    }

    /// Frees the unique value that op `holder`'s row holds and op `waiting` needs. Whether it
    /// could.
    async fn free(
        &mut self,
        session: &mut Session<'_>,
        holder: usize,
        waiting: usize,
    ) -> Result<bool, WriterError> {
        let table = Arc::clone(&self.ops[holder].row.table);
        let relations = self.relations(&table);
        let needed = &self.ops[waiting].row;
        // The unique indexes whose columns the waiting row sets.
        let indexes: Vec<usize> = table
            .unique_indexes
            .iter()
            .enumerate()
            .filter(|(_, u)| {
                !u.columns.is_empty() && u.columns.iter().all(|c| needed.columns.contains(c))
            })
            .map(|(i, _)| i)
            .collect();
        let (condition, params) = Self::condition_of(&self.ops[holder]);
        let table_name = quote_identifier(&table.name);
        let is_write = self.ops[holder].row.kind == StatementKind::Upsert;
        // First choice: set a nullable column of each such index to NULL (an UPDATE, which
        // fires no cascade and keeps every other column).
        let mut nulls = Vec::new();
        for &i in &indexes {
            if self.ops[holder].freed.contains(&i) {
                continue;
            }
            let column = table.unique_indexes[i].columns.iter().copied().find(|&c| {
                let column = &table.columns[c];
                column.nullable
                    && !column.generated
                    && !relations.referenced_columns.contains(&c)
                    && (!is_write || self.ops[holder].row.columns.contains(&c))
            });
            match column {
                Some(column) => nulls.push((i, column)),
                None => {
                    nulls.clear();
                    break;
                }
            }
        }
        if !nulls.is_empty() && self.ops[holder].aside.is_none() {
            let set: Vec<String> = nulls
                .iter()
                .map(|(_, c)| format!("{}=NULL", quote_identifier(&table.columns[*c].name)))
                .collect();
            let sql = format!(
                "UPDATE {table_name} SET {} WHERE {condition}",
                set.join(",")
            );
            match session.exec(&sql, params.clone()).await {
                Ok(()) => {
                    self.ops[holder].freed.extend(nulls.iter().map(|(i, _)| *i));
                    tracing::debug!(table = %table.name, key = %self.ops[holder].row.key_text, "unique value set aside as NULL");
                    return Ok(true);
                }
                Err(error) if is_constraint(&error) => {}
                Err(error) => {
                    return Err(WriterError::database(
                        session.shard,
                        "resolving a conflict",
                        Self::context(&self.ops[holder], ""),
                        &error,
                    ));
                }
            }
        }
        // Otherwise the row goes aside: deleted without cascading, inserted again later.
        if is_write && self.ops[holder].aside.is_none() {
            let columns: Vec<usize> = (0..table.columns.len())
                .filter(|&c| !table.columns[c].generated)
                .collect();
            let names: Vec<String> = columns
                .iter()
                .map(|c| quote_identifier(&table.columns[*c].name))
                .collect();
            let sql = format!(
                "SELECT {} FROM {table_name} WHERE {condition} FOR UPDATE",
                names.join(",")
            );
            let rows: Vec<Row> = session.rows(&sql, params.clone()).await.map_err(|e| {
                WriterError::database(session.shard, "resolving a conflict", String::new(), &e)
            })?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(false);
            };
            let previous: Vec<(usize, Value)> = columns
                .iter()
                .enumerate()
                .map(|(at, &c)| (c, row.as_ref(at).cloned().unwrap_or(Value::NULL)))
                .collect();
            self.delete_unchecked(session, holder, &relations, &condition, params)
                .await?;
            self.ops[holder].aside = Some(previous);
            tracing::debug!(table = %table.name, key = %self.ops[holder].row.key_text, "row set aside, to be inserted again");
            return Ok(true);
        }
        // A row the transaction deletes anyway: now, before the rows the transaction
        // re-points away from it (Spanner has no dangling reference at commit).
        if !is_write
            && !self.ops[holder].done
            && self.delete_early(session, holder, &relations).await?
        {
            self.ops[holder].done = true;
            tracing::debug!(table = %table.name, key = %self.ops[holder].row.key_text, "deleted row freed a unique value");
            self.ops[holder].blocked = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes op `index`'s row (a row the transaction deletes) before the rows of the
    /// transaction that still reference it are re-pointed: what MySQL's cascades would do to
    /// the other referencing rows is done first, by hand, then the row is deleted with
    /// foreign-key checks off. Not when a row outside the transaction references it through a
    /// `RESTRICT` foreign key (MySQL differs from Spanner). Whether it was deleted.
    async fn delete_early(
        &self,
        session: &mut Session<'_>,
        index: usize,
        relations: &Relations,
    ) -> Result<bool, WriterError> {
        let table = &self.ops[index].row.table;
        let (condition, params) = Self::condition_of(&self.ops[index]);
        let names = |table: &TargetTable, columns: &[usize]| -> Vec<String> {
            columns
                .iter()
                .map(|c| quote_identifier(&table.columns[*c].name))
                .collect()
        };
        // Per referencing foreign key: the condition selecting the referencing rows the
        // transaction does not change, with its parameters.
        let mut others = Vec::with_capacity(relations.children.len());
        for child in &relations.children {
            let pending: Vec<usize> = (0..self.ops.len())
                .filter(|&i| !self.ops[i].done && self.ops[i].row.table.name == child.table.name)
                .collect();
            if pending.len() > PROBE_CHUNK {
                return Ok(false);
            }
            let mut filter = format!(
                "({}) IN (SELECT {} FROM {} WHERE {condition})",
                names(&child.table, &child.columns).join(","),
                names(table, &child.referenced).join(","),
                quote_identifier(&table.name)
            );
            let mut filter_params = params.clone();
            if !pending.is_empty() {
                let conditions: Vec<String> = pending
                    .iter()
                    .map(|&i| {
                        let (condition, values) = Self::condition_of(&self.ops[i]);
                        filter_params.extend(values);
                        format!("({condition})")
                    })
                    .collect();
                filter.push_str(&format!(" AND NOT ({})", conditions.join(" OR ")));
            }
            if child.rule == Rule::Restrict {
                let sql = format!(
                    "SELECT COUNT(*) FROM {} WHERE {filter}",
                    quote_identifier(&child.table.name)
                );
                let rows = session.rows(&sql, filter_params).await.map_err(|e| {
                    WriterError::database(session.shard, "resolving a conflict", String::new(), &e)
                })?;
                let count: Option<i64> = rows.first().and_then(|row| row.get(0));
                if count.unwrap_or(1) > 0 {
                    return Ok(false);
                }
            } else {
                others.push((child, filter, filter_params));
            }
        }
        for (child, filter, filter_params) in others {
            let child_name = quote_identifier(&child.table.name);
            let sql = if child.rule == Rule::Cascade {
                format!("DELETE FROM {child_name} WHERE {filter}")
            } else {
                let set: Vec<String> = names(&child.table, &child.columns)
                    .into_iter()
                    .map(|c| format!("{c}=NULL"))
                    .collect();
                format!("UPDATE {child_name} SET {} WHERE {filter}", set.join(","))
            };
            match session.exec(&sql, filter_params).await {
                Ok(()) => {}
                // What could be done stays done: those rows are gone at commit anyway.
                Err(error) if is_constraint(&error) => return Ok(false),
                Err(error) => {
                    return Err(WriterError::database(
                        session.shard,
                        "resolving a conflict",
                        String::new(),
                        &error,
                    ));
                }
            }
        }
        self.delete_unchecked(session, index, relations, &condition, params)
            .await?;
        Ok(true)
    }

    /// Deletes op `index`'s row with foreign-key checks off when the table is referenced (so
    /// no child is checked or changed), and on again right after.
    async fn delete_unchecked(
        &self,
        session: &mut Session<'_>,
        index: usize,
        relations: &Relations,
        condition: &str,
        params: Vec<Value>,
    ) -> Result<(), WriterError> {
        let op = &self.ops[index];
        let sql = format!(
            "DELETE FROM {} WHERE {condition}",
            quote_identifier(&op.row.table.name)
        );
        if !relations.referenced {
            return session.exec(&sql, params).await.map_err(|e| {
                WriterError::database(
                    session.shard,
                    "resolving a conflict",
                    Self::context(op, ""),
                    &e,
                )
            });
        }
        let setting = |on: bool| format!("SET SESSION foreign_key_checks = {}", u8::from(on));
        session.exec_text(&setting(false)).await.map_err(|e| {
            WriterError::database(session.shard, "resolving a conflict", String::new(), &e)
        })?;
        let deleted = session.exec(&sql, params).await;
        // Checks must be on again before anything else runs on this connection; if that
        // fails, the connection is dropped (the error is transient).
        if let Err(e) = session.exec_text(&setting(true)).await {
            return Err(WriterError::Database {
                shard: session.shard.clone(),
                operation: "resolving a conflict",
                context: " (turning foreign-key checks on again)".into(),
                failure: MySqlFailure::from(&e),
                class: ErrorClass::Transient,
            });
        }
        deleted.map_err(|e| {
            WriterError::database(
                session.shard,
                "resolving a conflict",
                Self::context(op, ""),
                &e,
            )
        })
    }

    /// With nothing else possible: a new row waiting for a parent is written first with its
    /// nullable references `NULL`, or a deleted row's nullable references are cleared before
    /// its delete. Whether one was.
    async fn break_reference_cycle(
        &mut self,
        session: &mut Session<'_>,
    ) -> Result<bool, WriterError> {
        for index in 0..self.ops.len() {
            let op = &self.ops[index];
            let Some(reason) = op.blocked.as_ref().map(|b| b.reason) else {
                continue;
            };
            if op.done {
                continue;
            }
            let table = Arc::clone(&op.row.table);
            let relations = self.relations(&table);
            if relations.nullable_references.is_empty() {
                continue;
            }
            let op = &mut self.ops[index];
            match (op.row.kind, reason) {
                (StatementKind::Upsert, Reason::ParentMissing) if !op.references_cleared => {
                    op.references_cleared = true;
                    op.stage = Stage::ReferencesFirst;
                    tracing::debug!(table = %table.name, key = %op.row.key_text, "written first with its references NULL");
                    return Ok(true);
                }
                (kind, Reason::ChildExists) if kind.deletes() && !op.references_cleared => {
                    op.references_cleared = true;
                    tracing::debug!(table = %table.name, key = %op.row.key_text, "references cleared before the delete");
                    let (condition, params) = Self::condition_of(op);
                    let set: Vec<String> = relations
                        .nullable_references
                        .iter()
                        .map(|c| format!("{}=NULL", quote_identifier(&table.columns[*c].name)))
                        .collect();
                    let sql = format!(
                        "UPDATE {} SET {} WHERE {condition}",
                        quote_identifier(&table.name),
                        set.join(",")
                    );
                    match session.exec(&sql, params).await {
                        Ok(()) => return Ok(true),
                        Err(error) if is_constraint(&error) => {}
                        Err(error) => {
                            return Err(WriterError::database(
                                session.shard,
                                "resolving a conflict",
                                Self::context(op, ""),
                                &error,
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(false)
    }

    /// The error of a transaction that cannot be applied: the first blocked change's.
    fn failure(&mut self, session: &Session<'_>) -> WriterError {
        let mut fallback = None;
        for op in &mut self.ops {
            if op.done {
                continue;
            }
            if let Some(Blocked {
                error: Some(error), ..
            }) = op.blocked.take()
            {
                return error;
            }
            fallback.get_or_insert_with(|| {
                unresolved(
                    session.shard,
                    Self::context(
                        op,
                        ": no order of the transaction's changes satisfies MySQL's constraints",
                    ),
                )
            });
        }
        fallback.unwrap_or_else(|| unresolved(session.shard, String::new()))
    }
}

/// Who holds a unique value.
enum Holder {
    /// A row the transaction still changes (an op index).
    Pending(usize),
    /// Another row: the error to report.
    Other(WriterError),
    /// Nobody found (the conflict is elsewhere).
    Unknown,
}

/// A transaction no order of whose changes MySQL accepts, without a MySQL error to show.
fn unresolved(shard: &ShardId, context: String) -> WriterError {
    WriterError::InvalidBatch {
        shard: shard.clone(),
        reason: format!("a transaction cannot be applied{context}"),
    }
}

fn is_constraint(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(server) if resolvable(server.code))
}
