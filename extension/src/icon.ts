import { LabIcon } from '@jupyterlab/ui-components';

/** A spark in a circle: impetus = the push that keeps things moving. Colours follow the theme. */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <circle class="jp-icon3" fill="#616161" cx="12" cy="12" r="10" fill-opacity="0.18"/>
  <path class="jp-icon3" fill="#616161" d="M13.2 3.5 6.5 13.2h4.4l-1.2 7.3 6.8-9.9h-4.5z"/>
</svg>`;

export const impetusIcon = new LabIcon({ name: 'impetus:sidebar', svgstr: svg });
