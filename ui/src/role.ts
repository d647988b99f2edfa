// The signed-in account's role, for pages that explain what a viewer cannot do.
export type Role = 'admin' | 'viewer';

let current: Role = 'admin';

export function setRole(role: Role): void {
  current = role;
}

export function isViewer(): boolean {
  return current === 'viewer';
}
