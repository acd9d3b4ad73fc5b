//! An example revrepl transformation plugin (docs/transformations.md): the Spanner table
//! `Customers` replicated into a source schema that differs from it in the ways the
//! reference's user guide says reverse replication cannot handle without custom code.
//!
//! Spanner:
//!
//! ```sql
//! CREATE TABLE Customers (
//!   CustomerId INT64 NOT NULL, FirstName STRING(MAX), LastName STRING(MAX),
//!   Bio STRING(MAX), BalanceCents INT64, Status STRING(20)
//! ) PRIMARY KEY (CustomerId)
//! ```
//!
//! Source (MySQL):
//!
//! ```sql
//! CREATE TABLE customer (id BIGINT PRIMARY KEY, full_name VARCHAR(100),
//!   bio VARCHAR(20), region VARCHAR(8) NOT NULL);
//! CREATE TABLE customer_balance (customer_id BIGINT PRIMARY KEY,
//!   balance DECIMAL(14,2) NOT NULL,
//!   FOREIGN KEY (customer_id) REFERENCES customer (id));
//! ```
//!
//! What the plugin does with a `Customers` record:
//!
//! - **filter**: a record whose `Status` is one of `dropStatuses` is dropped (nothing applied);
//! - **two columns into one**: `FirstName` and `LastName` become `full_name` (`"First Last"`);
//!   an update that changes one of them needs the other from the new or old values (a change
//!   stream capturing `NEW_ROW` or old values), else the record is refused;
//! - **longer string**: `Bio` is shortened to `bioLength` characters (the source column's
//!   length), explicitly, instead of failing on a value that does not fit;
//! - **source-only `NOT NULL` column**: `region`, which Spanner does not have, gets `region`;
//! - **type change**: `BalanceCents` (INT64 cents) becomes `balance`, a `DECIMAL` text such
//!   as `"-12.05"`;
//! - **one row into two tables**: the balance goes to `customer_balance`, the rest to
//!   `customer`; a delete deletes both rows (the balance first: it references the customer).
//!
//! Records of other tables are kept as they are. Parameters (the `init` string) are JSON, every
//! field optional:
//!
//! ```json
//! {"region": "eu", "bioLength": 20, "dropStatuses": ["test"]}
//! ```
//!
//! The plugin is deterministic (its answer depends only on the record and the parameters), as
//! every transformation plugin must be: the writer may ask again about a record it retries or
//! reprocesses.
#![forbid(unsafe_code)]

use revrepl_shard_router_abi::{
    PluginError, SourceRow, TransformRequest, TransformationPlugin, Transformed, export_transformer,
};
use serde::Deserialize;
use serde_json::Value;

/// The Spanner table this plugin reshapes.
const CUSTOMERS: &str = "Customers";

/// The parameters of [`CustomerReshaper`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Params {
    /// The value of the source-only column `customer.region`.
    #[serde(default = "default_region")]
    region: String,
    /// The length of `customer.bio`, in characters.
    #[serde(default = "default_bio_length")]
    bio_length: usize,
    /// `Status` values whose records are dropped.
    #[serde(default)]
    drop_statuses: Vec<String>,
}

fn default_region() -> String {
    "unknown".to_string()
}

fn default_bio_length() -> usize {
    20
}

/// Reshapes `Customers` records into `customer` and `customer_balance` rows.
#[derive(Debug)]
pub struct CustomerReshaper {
    params: Params,
}

impl TransformationPlugin for CustomerReshaper {
    fn init(params: &str) -> Result<Self, PluginError> {
        let text = if params.trim().is_empty() {
            "{}"
        } else {
            params
        };
        let params: Params = serde_json::from_str(text)
            .map_err(|error| PluginError::new(format!("invalid parameters: {error}")))?;
        Ok(Self { params })
    }

    fn transform(&self, request: &TransformRequest) -> Result<Transformed, PluginError> {
        if request.table != CUSTOMERS {
            return Ok(Transformed::Keep);
        }
        if let Some(Value::String(status)) = request.get("Status")
            && self.params.drop_statuses.contains(status)
        {
            return Ok(Transformed::Drop);
        }
        let id = request.value("CustomerId")?.clone();
        if request.is_delete() {
            return Ok(Transformed::rows([
                SourceRow::delete("customer_balance").set("customer_id", id.clone()),
                SourceRow::delete("customer").set("id", id),
            ]));
        }
        let mut customer = SourceRow::upsert("customer")
            .set("id", id.clone())
            .set("region", self.params.region.clone());
        if changes(request, "FirstName") || changes(request, "LastName") {
            customer = customer.set("full_name", full_name(request)?);
        }
        if changes(request, "Bio") {
            let bio = match request.value("Bio")? {
                Value::String(bio) => Value::from(shorten(bio, self.params.bio_length)),
                other => other.clone(),
            };
            customer = customer.set("bio", bio);
        }
        let mut rows = vec![customer];
        let cents = request.new_values.get("BalanceCents");
        if cents.is_some() || request.is_insert() {
            let balance = match cents {
                None | Some(Value::Null) => "0.00".to_string(),
                Some(_) => decimal_of_cents(request.int64("BalanceCents")?),
            };
            rows.push(
                SourceRow::upsert("customer_balance")
                    .set("customer_id", id)
                    .set("balance", balance),
            );
        }
        Ok(Transformed::rows(rows))
    }
}

/// Whether the record sets `column` (in its keys or new values).
fn changes(request: &TransformRequest, column: &str) -> bool {
    request.keys.contains_key(column) || request.new_values.contains_key(column)
}

/// `"First Last"`, from the new values or, for the part an update leaves alone, the old ones;
/// NULL parts are left out (NULL when both are).
fn full_name(request: &TransformRequest) -> Result<Value, PluginError> {
    let part = |column: &str| -> Result<Option<String>, PluginError> {
        match request.get(column) {
            None => Err(PluginError::new(format!(
                "table {CUSTOMERS:?}: {column:?} is needed to build full_name but the record \
                 has neither its new nor its old value (capture NEW_ROW or old values)"
            ))),
            Some(Value::Null) => Ok(None),
            Some(_) => request.text(column).map(Some),
        }
    };
    let parts: Vec<String> = [part("FirstName")?, part("LastName")?]
        .into_iter()
        .flatten()
        .collect();
    Ok(if parts.is_empty() {
        Value::Null
    } else {
        Value::from(parts.join(" "))
    })
}

/// `text`'s first `length` characters.
fn shorten(text: &str, length: usize) -> String {
    text.chars().take(length).collect()
}

/// Cents as a decimal with two fractional digits: `-1205` → `"-12.05"`.
fn decimal_of_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let magnitude = i128::from(cents).unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

export_transformer!(CustomerReshaper);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(mod_type: &str, new_values: Value, old_values: Value) -> TransformRequest {
        serde_json::from_value(json!({
            "table": CUSTOMERS, "logicalShardId": "ls1", "modType": mod_type,
            "keys": {"CustomerId": "7"}, "newValues": new_values, "oldValues": old_values,
            "commitTimestamp": "2024-01-01T00:00:00Z", "serverTransactionId": "tx"
        }))
        .expect("request")
    }

    fn plugin(params: &str) -> CustomerReshaper {
        CustomerReshaper::init(params).expect("valid parameters")
    }

    #[test]
    fn an_insert_becomes_a_customer_and_a_balance() {
        let answer = plugin(r#"{"region": "eu", "bioLength": 5}"#)
            .transform(&request(
                "INSERT",
                json!({"FirstName": "Ada", "LastName": "Lovelace", "Bio": "Mathématicienne",
                       "BalanceCents": "-1205", "Status": "active"}),
                json!({}),
            ))
            .expect("transformed");
        assert_eq!(
            answer,
            Transformed::rows([
                SourceRow::upsert("customer")
                    .set("id", "7")
                    .set("region", "eu")
                    .set("full_name", "Ada Lovelace")
                    .set("bio", "Mathé"),
                SourceRow::upsert("customer_balance")
                    .set("customer_id", "7")
                    .set("balance", "-12.05"),
            ])
        );
    }

    #[test]
    fn an_update_of_one_name_takes_the_other_from_the_old_values_or_is_refused() {
        let p = plugin("");
        let answer = p
            .transform(&request(
                "UPDATE",
                json!({"FirstName": "Grace"}),
                json!({"FirstName": "G", "LastName": "Hopper"}),
            ))
            .expect("transformed");
        assert_eq!(
            answer,
            Transformed::rows([SourceRow::upsert("customer")
                .set("id", "7")
                .set("region", "unknown")
                .set("full_name", "Grace Hopper")])
        );
        let refused = p
            .transform(&request("UPDATE", json!({"FirstName": "Grace"}), json!({})))
            .expect_err("no last name");
        assert!(refused.message().contains("\"LastName\""), "{refused}");
    }

    #[test]
    fn filters_deletes_and_other_tables() {
        let p = plugin(r#"{"dropStatuses": ["test"]}"#);
        let dropped = p.transform(&request("INSERT", json!({"Status": "test"}), json!({})));
        assert_eq!(dropped, Ok(Transformed::Drop));
        let deleted = p.transform(&request("DELETE", json!({}), json!({})));
        assert_eq!(
            deleted,
            Ok(Transformed::rows([
                SourceRow::delete("customer_balance").set("customer_id", "7"),
                SourceRow::delete("customer").set("id", "7"),
            ]))
        );
        let mut other = request("INSERT", json!({}), json!({}));
        other.table = "Orders".to_string();
        assert_eq!(p.transform(&other), Ok(Transformed::Keep));
    }

    #[test]
    fn cents_become_decimals() {
        assert_eq!(decimal_of_cents(0), "0.00");
        assert_eq!(decimal_of_cents(5), "0.05");
        assert_eq!(decimal_of_cents(123_456), "1234.56");
        assert_eq!(decimal_of_cents(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(CustomerReshaper::init(r#"{"regio": "eu"}"#).is_err());
    }
}
