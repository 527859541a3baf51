// Bare pg vs the package in one process: the same scenario with the instrumentation on, then disabled.

/** Runs `scenario` with the package on, then with it disabled (bare pg), then re-enables it. */
export async function hookedThenBare<T>(
  instrumentation: { enable(): void; disable(): void },
  scenario: () => Promise<T>,
): Promise<{ hooked: T; bare: T }> {
  const hooked = await scenario();
  instrumentation.disable();
  try {
    return { hooked, bare: await scenario() };
  } finally {
    instrumentation.enable();
  }
}
