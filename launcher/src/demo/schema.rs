//! The demo's schema: a small shop sharded by customer. Spanner holds every shard's rows with
//! a `ShardId` column naming the logical shard; each MySQL shard holds its customers and their
//! orders under the source (snake_case) names, with a foreign key from orders to customers.
//! The session file maps the two, as the Spanner Migration Tool would have written it.

/// The logical shards, one MariaDB server each.
pub const SHARDS: [&str; 2] = ["shard1", "shard2"];

/// The Spanner instance and database the demo creates.
pub const PROJECT: &str = "revrepl-demo";
/// The instance.
pub const INSTANCE: &str = "demo";
/// The database (also the MySQL database name on every shard).
pub const DATABASE: &str = "shop";
/// The change stream `revrepl init` creates.
pub const CHANGE_STREAM: &str = "shop_stream";

/// `projects/<p>/instances/<i>/databases/<d>`.
pub fn database_path() -> String {
    format!("projects/{PROJECT}/instances/{INSTANCE}/databases/{DATABASE}")
}

/// The Spanner tables (the change stream is left to `revrepl init`).
pub const SPANNER_DDL: [&str; 2] = [
    "CREATE TABLE Customers (
        CustomerId INT64 NOT NULL,
        ShardId STRING(32) NOT NULL,
        Name STRING(100),
        Email STRING(MAX),
        Tier STRING(10),
        Balance NUMERIC,
        Active BOOL,
        Birthday DATE,
        UpdatedAt TIMESTAMP,
    ) PRIMARY KEY (CustomerId)",
    "CREATE TABLE Orders (
        CustomerId INT64 NOT NULL,
        OrderId INT64 NOT NULL,
        ShardId STRING(32) NOT NULL,
        Item STRING(MAX),
        Quantity INT64,
        Price NUMERIC,
        Weight FLOAT64,
        Notes JSON,
        PlacedAt TIMESTAMP,
        CONSTRAINT FK_OrdersCustomer FOREIGN KEY (CustomerId) REFERENCES Customers (CustomerId),
    ) PRIMARY KEY (CustomerId, OrderId)",
];

/// The tables of every MySQL shard.
pub const MYSQL_DDL: [&str; 2] = [
    "CREATE TABLE customers (
        id BIGINT NOT NULL PRIMARY KEY,
        name VARCHAR(100),
        email VARCHAR(255),
        tier VARCHAR(10),
        balance DECIMAL(12,2),
        active TINYINT(1),
        birthday DATE,
        updated_at DATETIME(6)
    ) ENGINE=InnoDB",
    "CREATE TABLE orders (
        customer_id BIGINT NOT NULL,
        order_id BIGINT NOT NULL,
        item VARCHAR(255),
        quantity INT,
        price DECIMAL(10,2),
        weight DOUBLE,
        notes JSON,
        placed_at DATETIME(6),
        PRIMARY KEY (customer_id, order_id),
        CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
    ) ENGINE=InnoDB",
];

/// The session file: Spanner names and types, source names and types, and the shard-id
/// column of each table.
pub const SESSION: &str = r#"{
  "SpSchema": {
    "t1": {"Name": "Customers", "Id": "t1", "ShardIdColumn": "c2",
           "ColIds": ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"],
           "ColDefs": {"c1": {"Name": "CustomerId", "Id": "c1", "T": {"Name": "INT64"}},
                       "c2": {"Name": "ShardId", "Id": "c2", "T": {"Name": "STRING"}},
                       "c3": {"Name": "Name", "Id": "c3", "T": {"Name": "STRING"}},
                       "c4": {"Name": "Email", "Id": "c4", "T": {"Name": "STRING"}},
                       "c5": {"Name": "Tier", "Id": "c5", "T": {"Name": "STRING"}},
                       "c6": {"Name": "Balance", "Id": "c6", "T": {"Name": "NUMERIC"}},
                       "c7": {"Name": "Active", "Id": "c7", "T": {"Name": "BOOL"}},
                       "c8": {"Name": "Birthday", "Id": "c8", "T": {"Name": "DATE"}},
                       "c9": {"Name": "UpdatedAt", "Id": "c9", "T": {"Name": "TIMESTAMP"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]},
    "t2": {"Name": "Orders", "Id": "t2", "ShardIdColumn": "c12",
           "ColIds": ["c10", "c11", "c12", "c13", "c14", "c15", "c16", "c17", "c18"],
           "ColDefs": {"c10": {"Name": "CustomerId", "Id": "c10", "T": {"Name": "INT64"}},
                       "c11": {"Name": "OrderId", "Id": "c11", "T": {"Name": "INT64"}},
                       "c12": {"Name": "ShardId", "Id": "c12", "T": {"Name": "STRING"}},
                       "c13": {"Name": "Item", "Id": "c13", "T": {"Name": "STRING"}},
                       "c14": {"Name": "Quantity", "Id": "c14", "T": {"Name": "INT64"}},
                       "c15": {"Name": "Price", "Id": "c15", "T": {"Name": "NUMERIC"}},
                       "c16": {"Name": "Weight", "Id": "c16", "T": {"Name": "FLOAT64"}},
                       "c17": {"Name": "Notes", "Id": "c17", "T": {"Name": "JSON"}},
                       "c18": {"Name": "PlacedAt", "Id": "c18", "T": {"Name": "TIMESTAMP"}}},
           "PrimaryKeys": [{"ColId": "c10", "Order": 1}, {"ColId": "c11", "Order": 2}]}
  },
  "SrcSchema": {
    "t1": {"Name": "customers", "Id": "t1",
           "ColIds": ["c1", "c3", "c4", "c5", "c6", "c7", "c8", "c9"],
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "Type": {"Name": "bigint"}},
                       "c3": {"Name": "name", "Id": "c3", "Type": {"Name": "varchar", "Mods": [100]}},
                       "c4": {"Name": "email", "Id": "c4", "Type": {"Name": "varchar", "Mods": [255]}},
                       "c5": {"Name": "tier", "Id": "c5", "Type": {"Name": "varchar", "Mods": [10]}},
                       "c6": {"Name": "balance", "Id": "c6", "Type": {"Name": "decimal", "Mods": [12, 2]}},
                       "c7": {"Name": "active", "Id": "c7", "Type": {"Name": "tinyint", "Mods": [1]}},
                       "c8": {"Name": "birthday", "Id": "c8", "Type": {"Name": "date"}},
                       "c9": {"Name": "updated_at", "Id": "c9", "Type": {"Name": "datetime", "Mods": [6]}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]},
    "t2": {"Name": "orders", "Id": "t2",
           "ColIds": ["c10", "c11", "c13", "c14", "c15", "c16", "c17", "c18"],
           "ColDefs": {"c10": {"Name": "customer_id", "Id": "c10", "Type": {"Name": "bigint"}},
                       "c11": {"Name": "order_id", "Id": "c11", "Type": {"Name": "bigint"}},
                       "c13": {"Name": "item", "Id": "c13", "Type": {"Name": "varchar", "Mods": [255]}},
                       "c14": {"Name": "quantity", "Id": "c14", "Type": {"Name": "int"}},
                       "c15": {"Name": "price", "Id": "c15", "Type": {"Name": "decimal", "Mods": [10, 2]}},
                       "c16": {"Name": "weight", "Id": "c16", "Type": {"Name": "double"}},
                       "c17": {"Name": "notes", "Id": "c17", "Type": {"Name": "json"}},
                       "c18": {"Name": "placed_at", "Id": "c18", "Type": {"Name": "datetime", "Mods": [6]}}},
           "PrimaryKeys": [{"ColId": "c10", "Order": 1}, {"ColId": "c11", "Order": 2}]}
  },
  "SyntheticPKeys": {}
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_file_routes_both_tables_by_shard_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("session.json");
        std::fs::write(&path, SESSION).expect("write");
        let session = revrepl_shard_routing::Session::load(&path).expect("session loads");
        for table in ["Customers", "Orders"] {
            let table = session.table(table).expect("table in session");
            assert!(table.shard_id_column.is_some(), "{table:?}");
        }
    }
}
