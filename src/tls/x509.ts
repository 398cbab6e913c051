// Owns: the one place @peculiar/x509 is initialised (it needs a WebCrypto provider).
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509, webcrypto };
