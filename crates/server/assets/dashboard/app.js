// LoudSync operator dashboard: placeholder script, replaced by `npm run build` in dashboard/.
