/**
 * The impetus JupyterLab plugin: a left-sidebar panel (engine status, models, endpoint, API
 * keys, activity) and palette commands. It talks to the server only through
 * `ServerConnection.makeRequest` under `{base_url}impetus/`, which adds the token and XSRF header.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import {
  Clipboard,
  Dialog,
  ICommandPalette,
  InputDialog,
  Notification,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ServerConnection } from '@jupyterlab/services';

import { Fetcher, ImpetusApi } from './api';
import { describeError } from './errors';
import { impetusIcon } from './icon';
import { SidebarModel } from './model';
import { modelRows, preferredChatModel } from './models';
import { ImpetusSidebar } from './panel';
import { chatNotebook, chatNotebookName } from './snippets';

export const BENCHMARK_REPORT = 'notebooks/benchmark-report.ipynb';

namespace CommandIDs {
  export const open = 'impetus:open-sidebar';
  export const loadModel = 'impetus:load-model';
  export const unloadModel = 'impetus:unload-model';
  export const openChat = 'impetus:open-chat';
  export const openBenchmark = 'impetus:open-benchmark-report';
}

/** The transport: JupyterLab's authenticated fetch, rooted at `{base_url}impetus/`. */
export function serverFetcher(settings: ServerConnection.ISettings): Fetcher {
  return (path, init = {}) =>
    ServerConnection.makeRequest(
      URLExt.join(settings.baseUrl, 'impetus', path),
      init,
      settings
    ).catch((err: unknown) => {
      // NetworkError from makeRequest: the server is down or unreachable.
      throw new Error(`cannot reach the server: ${describeError(err)}`);
    });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'impetus-lab:plugin',
  description: 'impetus sidebar: engine status, models, OpenAI endpoint and API keys.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    fileBrowser: IDefaultFileBrowser | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const api = new ImpetusApi(serverFetcher(settings));
    const model = new SidebarModel(api, {
      onError: message => Notification.error(message, { autoClose: 8000 })
    });
    const { commands, serviceManager } = app;

    /** Create `chat-<model>.ipynb` in the file browser's folder (or the root) and open it. */
    async function openChat(modelId: string): Promise<void> {
      const contents = serviceManager.contents;
      // The file browser's folder, like File > New does; the server root without one.
      const folder = fileBrowser?.model.path ?? '';
      let path = '';
      for (let attempt = 0; attempt < 100; attempt++) {
        const candidate = URLExt.join(folder, chatNotebookName(modelId, attempt));
        try {
          await contents.get(candidate, { content: false });
        } catch {
          path = candidate; // not found: free
          break;
        }
      }
      if (!path) {
        throw new Error('no free notebook name');
      }
      await contents.save(path, {
        type: 'notebook',
        format: 'json',
        content: chatNotebook(modelId)
      });
      await commands.execute('docmanager:open', { path, factory: 'Notebook' });
    }

    async function pickModel(
      title: string,
      choices: string[],
      current?: string
    ): Promise<string | null> {
      const result = await InputDialog.getItem({
        title,
        items: choices,
        current: current && choices.includes(current) ? choices.indexOf(current) : 0,
        editable: true,
        placeholder: 'model id'
      });
      return result.button.accept && result.value ? result.value.trim() : null;
    }

    const sidebar = new ImpetusSidebar(model, {
      serverBaseUrl: settings.baseUrl,
      copy: (text, what) => {
        Clipboard.copyToSystem(text);
        Notification.success(`${what} copied`, { autoClose: 2000 });
      },
      openChat: modelId => void commands.execute(CommandIDs.openChat, { model: modelId }),
      openBenchmarkReport: () => void commands.execute(CommandIDs.openBenchmark),
      confirm: async (title, body, action) => {
        const result = await showDialog({
          title,
          body,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: action })]
        });
        return result.button.accept;
      }
    });
    sidebar.title.icon = impetusIcon;
    sidebar.title.caption = 'impetus: engine, models and endpoint';
    app.shell.add(sidebar, 'left', { rank: 900 });
    restorer?.add(sidebar, 'impetus-sidebar');

    commands.addCommand(CommandIDs.open, {
      label: 'impetus: Show Sidebar',
      icon: impetusIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });

    commands.addCommand(CommandIDs.loadModel, {
      label: args => (args.id ? `impetus: Load ${args.id}` : 'impetus: Load Model…'),
      describedBy: {
        args: {
          type: 'object',
          properties: {
            id: { type: 'string', description: 'model id; asked for when absent' },
            keepAlive: { type: 'number', description: 'idle seconds before unloading; <0: never' }
          }
        }
      },
      execute: async args => {
        let id = typeof args.id === 'string' ? args.id : null;
        if (!id) {
          await model.refreshModels();
          const rows = modelRows(
            model.state.models,
            model.state.status?.models ?? null,
            model.state.pulls
          );
          const choices = rows.filter(r => r.downloaded && !r.loaded).map(r => r.entry.id);
          id = await pickModel('Load model', choices.length ? choices : rows.map(r => r.entry.id));
        }
        if (!id) {
          return false;
        }
        const keepAlive =
          typeof args.keepAlive === 'number' ? args.keepAlive : model.state.keepAlive;
        const ok = await model.load(id, keepAlive);
        if (ok) {
          Notification.success(`Loaded ${id}`, { autoClose: 3000 });
        }
        return ok;
      }
    });

    commands.addCommand(CommandIDs.unloadModel, {
      label: args => (args.id ? `impetus: Unload ${args.id}` : 'impetus: Unload Model…'),
      execute: async args => {
        let id = typeof args.id === 'string' ? args.id : null;
        if (!id) {
          const status = await model.refreshStatus();
          const loaded = (status?.models ?? []).map(m => m.id);
          if (loaded.length === 0) {
            Notification.info('No model is loaded.', { autoClose: 3000 });
            return false;
          }
          id = await pickModel('Unload model', loaded);
        }
        return id ? model.unload(id) : false;
      }
    });

    commands.addCommand(CommandIDs.openChat, {
      label: args =>
        args.model ? `impetus: Chat with ${args.model}` : 'impetus: New Chat Notebook',
      describedBy: {
        args: {
          type: 'object',
          properties: {
            model: { type: 'string', description: 'model id; the loaded chat model by default' }
          }
        }
      },
      execute: async args => {
        let modelId = typeof args.model === 'string' ? args.model : null;
        if (!modelId) {
          if (!model.state.status) {
            await model.refreshAll();
          }
          const rows = modelRows(
            model.state.models,
            model.state.status?.models ?? null,
            model.state.pulls
          );
          modelId = await pickModel(
            'Chat with model',
            rows
              .filter(r => (r.state?.kind ?? r.entry.kind ?? 'chat') === 'chat')
              .map(r => r.entry.id),
            preferredChatModel(rows)
          );
        }
        if (!modelId) {
          return;
        }
        try {
          await openChat(modelId);
        } catch (err) {
          await showErrorMessage('Cannot create the chat notebook', describeError(err));
        }
      }
    });

    commands.addCommand(CommandIDs.openBenchmark, {
      label: 'impetus: Open Benchmark Report',
      describedBy: {
        args: {
          type: 'object',
          properties: {
            path: { type: 'string', description: `notebook path (default ${BENCHMARK_REPORT})` }
          }
        }
      },
      execute: async args => {
        const path = typeof args.path === 'string' ? args.path : BENCHMARK_REPORT;
        try {
          await serviceManager.contents.get(path, { content: false });
        } catch {
          await showErrorMessage(
            'Benchmark report not found',
            `${path} is not under the server's root folder. Start JupyterLab from the impetus ` +
              'repository, or run `impetus bench` for a report without the notebook.'
          );
          return;
        }
        await commands.execute('docmanager:open', { path, factory: 'Notebook' });
      }
    });

    if (palette) {
      const category = 'impetus';
      for (const command of [
        CommandIDs.open,
        CommandIDs.loadModel,
        CommandIDs.unloadModel,
        CommandIDs.openChat,
        CommandIDs.openBenchmark
      ]) {
        palette.addItem({ command, category });
      }
    }
  }
};

export default plugin;
