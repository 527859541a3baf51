/**
 * The worker side of slice mode (BENCH_SLICES=1, bench/lib/turns.ts): each stdin line `<warmupMs>
 * <durationMs>` runs `measure` once and prints its result as one JSON line; resolves when stdin closes.
 */
export async function answerSlices(
  measure: (warmupMs: number, durationMs: number) => Promise<object>,
): Promise<void> {
  process.stdin.setEncoding('utf8');
  let buffered = '';
  for await (const chunk of process.stdin) {
    buffered += chunk as string;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const [warmup, duration] = buffered.slice(0, nl).trim().split(/\s+/).map(Number);
      buffered = buffered.slice(nl + 1);
      process.stdout.write(`${JSON.stringify(await measure(warmup!, duration!))}\n`);
    }
  }
}
