// Light, dark, or the system's choice. Kept in localStorage; applied as `data-theme` on <html>
// (styles.css follows `prefers-color-scheme` when it is absent). No inline script: the strict
// CSP forbids one, so the choice is applied as the bundle starts.
import { useState } from 'preact/hooks';

export type Theme = 'system' | 'light' | 'dark';
const KEY = 'auxot-theme';
const NEXT: Record<Theme, Theme> = { system: 'dark', dark: 'light', light: 'system' };
const LABEL: Record<Theme, string> = { system: 'Theme: system', dark: 'Theme: dark', light: 'Theme: light' };

export function storedTheme(): Theme {
  try {
    const value = window.localStorage.getItem(KEY);
    return value === 'light' || value === 'dark' ? value : 'system';
  } catch {
    return 'system';
  }
}

export function applyTheme(theme: Theme): void {
  const root = document.documentElement;
  if (theme === 'system') root.removeAttribute('data-theme');
  else root.setAttribute('data-theme', theme);
  try {
    if (theme === 'system') window.localStorage.removeItem(KEY);
    else window.localStorage.setItem(KEY, theme);
  } catch {
    // Private mode: the choice lasts for this page only.
  }
}

export function ThemeToggle() {
  const [theme, setTheme] = useState<Theme>(storedTheme);
  const cycle = () => {
    const next = NEXT[theme];
    applyTheme(next);
    setTheme(next);
  };
  return (
    <button type="button" class="secondary small theme-toggle" onClick={cycle} title="Switch between the system's theme, dark and light" aria-label={LABEL[theme]} data-testid="theme-toggle">
      <span aria-hidden="true" class="theme-icon">
        ◐
      </span>
      <span class="theme-label">{LABEL[theme]}</span>
    </button>
  );
}
