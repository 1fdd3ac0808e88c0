// Apache Iceberg's reference REST catalog (RESTCatalogAdapter over a JDBC catalog in a
// SQLite file), served on 127.0.0.1 only: the jar's own main listens on every interface.
// Usage: java -cp iceberg-open-api.jar:. LoopbackRestCatalog PORT WAREHOUSE_URL SQLITE_PATH

import java.util.HashMap;
import java.util.Map;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.apache.iceberg.rest.RESTCatalogAdapter;
import org.apache.iceberg.rest.RESTCatalogServlet;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public class LoopbackRestCatalog {
  public static void main(String[] args) throws Exception {
    Map<String, String> properties = new HashMap<>();
    properties.put("catalog-impl", "org.apache.iceberg.jdbc.JdbcCatalog");
    properties.put("warehouse", args[1]);
    properties.put("uri", "jdbc:sqlite:" + args[2]);
    properties.put("jdbc.schema-version", "V1");
    Catalog catalog =
        CatalogUtil.buildIcebergCatalog(
            "rest_backend", properties, new org.apache.hadoop.conf.Configuration());
    ServletContextHandler context = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    context.addServlet(new ServletHolder(new RESTCatalogServlet(new RESTCatalogAdapter(catalog))), "/*");
    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost("127.0.0.1");
    connector.setPort(Integer.parseInt(args[0]));
    server.addConnector(connector);
    server.setHandler(context);
    server.start();
    server.join();
  }
}
