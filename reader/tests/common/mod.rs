//! Fixtures shared by the reader's integration tests.

/// A session file whose `Users` table names `shard` as its shard-id column.
pub const SESSION: &str = r#"{
  "SpSchema": {
    "t1": {"Name": "Users", "Id": "t1", "ColIds": ["c1", "c2", "c3"], "ShardIdColumn": "c2",
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "T": {"Name": "INT64"}},
                       "c2": {"Name": "shard", "Id": "c2", "T": {"Name": "STRING"}},
                       "c3": {"Name": "v", "Id": "c3", "T": {"Name": "STRING"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
  },
  "SrcSchema": {
    "t1": {"Name": "users", "Id": "t1", "ColIds": ["c1", "c2", "c3"],
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "Type": {"Name": "bigint"}},
                       "c2": {"Name": "shard", "Id": "c2", "Type": {"Name": "varchar"}},
                       "c3": {"Name": "v", "Id": "c3", "Type": {"Name": "varchar"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
  },
  "SyntheticPKeys": {}
}"#;
