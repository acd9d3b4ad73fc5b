//! A test transformation plugin that misbehaves on one key, to prove each mistake becomes a
//! clear definite error and nothing of the record's transaction is applied.
//!
//! The parameter string is `<fault>:<id>`: records whose key column `id` is `<id>` get the
//! fault, every other record is kept. Faults: `panic` (panics), `unknown-table` (writes to a
//! table that does not exist), `unknown-column` (writes a column that does not exist),
//! `refuse` (refuses the record).
#![forbid(unsafe_code)]

use revrepl_shard_router_abi::{
    PluginError, SourceRow, TransformRequest, TransformationPlugin, Transformed, export_transformer,
};

/// Misbehaves on one key.
#[derive(Debug)]
pub struct FaultyTransformer {
    fault: String,
    id: String,
}

impl TransformationPlugin for FaultyTransformer {
    fn init(params: &str) -> Result<Self, PluginError> {
        let (fault, id) = params
            .split_once(':')
            .ok_or_else(|| PluginError::new("parameters are <fault>:<id>"))?;
        Ok(Self {
            fault: fault.to_string(),
            id: id.to_string(),
        })
    }

    fn transform(&self, request: &TransformRequest) -> Result<Transformed, PluginError> {
        if request.text("id")? != self.id {
            return Ok(Transformed::Keep);
        }
        let row = SourceRow::upsert(request.table.clone()).set("id", self.id.clone());
        match self.fault.as_str() {
            "panic" => panic!("the faulty transformer panics on id {}", self.id),
            "unknown-table" => Ok(Transformed::rows([
                SourceRow::upsert("no_such_table").set("id", self.id.clone())
            ])),
            "unknown-column" => Ok(Transformed::rows([row.set("no_such_column", 1)])),
            "refuse" => Err(PluginError::new("refused on purpose")),
            other => Err(PluginError::new(format!("unknown fault {other:?}"))),
        }
    }
}

export_transformer!(FaultyTransformer);
