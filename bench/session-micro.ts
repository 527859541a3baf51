/**
 * Micro-benchmark of the session tracking every app statement passes (substitute connections): what
 * `trackSession` (with the issue-time `usable` check) costs per statement, on statements of the
 * shapes ORMs send, none of which changes the session (the happy path).
 * Run: node bench/session-micro.ts [iterations]
 */
import { trackSession, usable } from '../src/instrumentation/substitute.ts';

const N = Number(process.argv[2] ?? 2_000_000);
const TEXTS = [
  'SELECT 1',
  'select "users"."id", "users"."email", "users"."created_at" from "users" where "users"."id" = $1 limit $2',
  'INSERT INTO "orders" ("user_id", "total", "status", "created_at") VALUES ($1, $2, $3, $4) RETURNING "id"',
  'UPDATE "accounts" SET "balance" = $1, "updated_at" = $2 WHERE "id" = $3',
  'SELECT "Post"."id", "Post"."title", "Post"."body", "Post"."authorId", "Post"."createdAt", "Post"."updatedAt", ' +
    '"author"."id" AS "author_id", "author"."name" AS "author_name" FROM "Post" LEFT JOIN "User" AS "author" ' +
    'ON "author"."id" = "Post"."authorId" WHERE "Post"."published" = $1 ORDER BY "Post"."createdAt" DESC LIMIT 20 OFFSET 0',
];
// The fields pg's Client has that the check reads.
const client = { _queryable: true, _ending: false, _ended: false, getTransactionStatus: () => 'I' };

let sink = 0;
for (const text of TEXTS) {
  for (let i = 0; i < 100_000; i++) if (trackSession(client, text, undefined, 0)) sink++; // warm-up
  const best: number[] = [];
  for (let round = 0; round < 5; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N / 5; i++) {
      if (usable(client)) sink++;
      if (trackSession(client, text, undefined, 0)) sink++;
    }
    best.push(Number(process.hrtime.bigint() - t0) / (N / 5));
  }
  console.log(
    `${Math.min(...best)
      .toFixed(0)
      .padStart(5)} ns/statement  ${String(text.length).padStart(4)} chars  ${text.slice(0, 48)}`,
  );
}
if (sink < 0) console.log(sink);
