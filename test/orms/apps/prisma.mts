// Prisma 7 (ES module, TypeScript client): @prisma/adapter-pg over a pg.Pool; pool.query, interactive
// transactions via pool.connect(). The client is generated at test time (PRISMA_CLIENT: its client.mts).
import { PrismaPg } from '@prisma/adapter-pg';
import { abort, legs, run } from './workload.cjs';

const { PrismaClient } = await import(process.env.PRISMA_CLIENT!);
const prisma = new PrismaClient({
  adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL, max: 4 }),
});

await run({
  insert: (key: string, val: number) => prisma.item.create({ data: { key, val } }),
  read: async (key: string) => {
    const row = await prisma.item.findUnique({ where: { key } });
    return row ? Number(row.val) : null;
  },
  transfer: (id: string, src: number, dst: number, amount: number, opts: { fail?: boolean } = {}) =>
    prisma.$transaction(async (tx: any) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await tx.account.update({ where: { id: acc }, data: { balance: { increment: delta } } });
        if (opts.fail) abort();
      }
      await tx.transfer.create({ data: { id, src, dst, amount } });
    }),
  insertAccount: (id: number) => prisma.account.create({ data: { id, balance: 0 } }),
  balance: async (id: number) => Number((await prisma.account.findUniqueOrThrow({ where: { id } })).balance),
  close: () => prisma.$disconnect(),
});
