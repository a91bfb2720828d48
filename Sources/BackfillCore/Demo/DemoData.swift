import PostgresClient

/// The demo's sample table and job: accounts whose `balance_cents` is filled from `balance`.
public enum DemoData {
    /// The job file `backfill demo` runs; `jobs/demo.yaml` holds the same text (a test checks).
    public static let jobYAML = """
        # The job `backfill demo` runs: fill accounts.balance_cents from balance, in key order.
        name: demo-accounts-fill-balance-cents
        table: public.accounts
        key: [id]
        where: balance_cents IS NULL
        set:
          balance_cents: (balance * 100)::bigint
        batch:
          size: 1000
          target_ms: 50

        """

    /// Creates `public.accounts` with `rows` rows of realistic width and `balance_cents` NULL.
    public static func seed(rows: Int, on db: Connection) throws {
        try db.execute(
            """
            DROP TABLE IF EXISTS public.accounts;
            CREATE TABLE public.accounts (
                id bigint PRIMARY KEY,
                email text NOT NULL,
                status text NOT NULL,
                balance numeric(12, 2) NOT NULL,
                balance_cents bigint,
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            """)
        try db.query(
            """
            INSERT INTO public.accounts (id, email, status, balance)
            SELECT g, 'user' || g || '@' || (ARRAY['example.com', 'mail.test', 'corp.invalid'])[1 + g % 3],
                   (ARRAY['active', 'dormant', 'closed'])[1 + g % 3], round((random() * 10000)::numeric, 2)
            FROM generate_series(1, $1::bigint) AS g
            """, [.int(Int64(rows))])
        try db.execute("VACUUM ANALYZE public.accounts")
    }
}
