// Proof module "faults-workers" (issue 13): the load with faults of proof/faults.ts against
// `workers: 2`, the kills alternating between single workers and the supervisor. Nothing lost,
// nothing corrupted.
import { faultsModule } from './faults.ts';

export default faultsModule('faults-workers', 2);
