//! One contract suite, run against both metadata stores: the Spanner store on its own emulator
//! and the SQLite store on its own temp file, per test.
//!
//! Test names are `<store>::<contract>`, such as
//! `sqlite::created_upto_is_monotonic_under_concurrent_callers`.

mod backend;
mod suite;

/// Instantiates every contract of [`suite`] for one backend.
macro_rules! contract_suite {
    ($store:ident, $backend:ty) => {
        mod $store {
            use super::suite;

            async fn backend() -> $backend {
                <$backend as crate::backend::Backend>::start().await
            }

            contract_suite!(@tests
                tables_are_created_idempotently_and_concurrently,
                run_is_recorded_once_and_required_for_resume,
                created_upto_is_monotonic_under_concurrent_callers,
                one_store_serves_many_tasks_at_once,
                window_finalization_is_atomic_to_observers,
                failed_window_finalization_writes_nothing,
                windows_with_data_are_listed_by_range_in_one_query,
                process_status_transitions_and_listing_by_status,
                shard_errors_are_kept_per_run_and_shard_and_overwritten,
                missing_shard_errors_table_reads_as_empty_and_skips_writes,
                table_suffixes_keep_stores_apart,
                two_runs_do_not_see_each_others_rows,
                reopening_the_store_keeps_every_row,
                shard_registration_never_moves_rows,
                malformed_table_is_fatal_and_names_the_table,
                unreachable_store_is_transient,
                a_lease_has_one_owner_until_it_expires_or_is_released,
                concurrent_lease_requests_admit_exactly_one_owner,
                missing_leases_table_holds_nothing_and_says_so,
                a_lease_keeper_refuses_a_second_holder_and_stops_when_taken_over,
            );
        }
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = backend().await;
                suite::$name(&backend).await;
            }
        )*
    };
}

contract_suite!(sqlite, crate::backend::Sqlite);
contract_suite!(spanner, crate::backend::Spanner);

/// What only the Spanner store has to survive.
mod spanner_faults {
    use crate::suite;

    /// With the emulator aborting transactions at random, every write still lands exactly as
    /// asked: aborted transactions are retried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aborted_transactions_are_retried() {
        let backend = crate::backend::Spanner::start_with_fault_injection().await;
        suite::writes_survive_aborted_transactions(&backend).await;
    }
}
